// Posting result documents to `shvit-edge results listen` (docs/bundle.md section 7), and what to do with each
// answer:
//   201            stored: done
//   422, 413       the host refused this document (or it is too large): never resent
//   401            the token is wrong or missing: kept, and sent again after pairing again
//   429, 503, 408, 500, no answer   kept, and retried later (with a growing wait)
//   400, 404, 405, 411, 414, 431, 505  the request was malformed: kept, not retried automatically (the message says why)
// The outbox (Documents/Outbox.json) survives restarts: a result is never lost because the host was away.
import Foundation
import HarnessCore

/// The pairing with `results listen`: its URL and token, scanned from its QR code or pasted.
enum PairingStore {
    private static let key = "shvit-edge.pairing"

    static func load() -> Pairing? {
        guard let data = UserDefaults.standard.data(forKey: key) else { return nil }
        return try? JSONDecoder().decode(Pairing.self, from: data)
    }

    static func save(_ pairing: Pairing?) {
        if let pairing, let data = try? JSONEncoder().encode(pairing) {
            UserDefaults.standard.set(data, forKey: key)
        } else {
            UserDefaults.standard.removeObject(forKey: key)
        }
    }
}

struct OutboxItem: Codable, Identifiable, Equatable {
    enum State: String, Codable {
        /// waiting to be sent (first time, or again after a retryable answer)
        case pending
        /// stored by the host (201)
        case stored
        /// refused for good (422, 413): not resent
        case refused
        /// 401: sent again once paired again
        case needsPairing
        /// a malformed request (400, 404, ...): not retried automatically
        case malformed
    }

    /// the result file's name in Documents/Results
    var file: String
    var state: State
    var message: String
    var attempts: Int
    /// when a pending item may be tried again (seconds since 1970)
    var notBefore: Double

    var id: String { file }
}

enum Outbox {
    static var url: URL { BundleStore.documents.appendingPathComponent("Outbox.json") }

    static func load() -> [OutboxItem] {
        guard let data = try? Data(contentsOf: url) else { return [] }
        return (try? JSONDecoder().decode([OutboxItem].self, from: data)) ?? []
    }

    static func save(_ items: [OutboxItem]) {
        guard let data = try? JSONEncoder().encode(items) else { return }
        try? data.write(to: url, options: .atomic)
    }

    /// What an answer means for the item (docs/bundle.md section 7).
    static func apply(_ outcome: PostOutcome, to item: inout OutboxItem, now: Date = Date()) {
        item.attempts += 1
        item.message = outcome.status == 0 ? outcome.message : "HTTP \(outcome.status): \(outcome.message)"
        switch outcome.status {
        case 201:
            item.state = .stored
        case 422, 413:
            item.state = .refused
        case 401:
            item.state = .needsPairing
        case 0, 408, 429, 500, 503:
            item.state = .pending
            // 429 asks for a minute (60 requests a minute per address); otherwise 30 s, doubling, at most 10 min
            let wait = outcome.status == 429 ? 60.0 : min(600.0, 30.0 * pow(2.0, Double(max(0, item.attempts - 1))))
            item.notBefore = now.timeIntervalSince1970 + wait
        default:
            item.state = .malformed
        }
    }

    /// Send `item`'s document with `pairing`; the item as it stands afterwards.
    static func send(_ item: OutboxItem, _ pairing: Pairing) async -> OutboxItem {
        var item = item
        let file = BundleStore.resultsFolder.appendingPathComponent(item.file)
        let document: ResultDocument
        do {
            document = try ResultDocument.read(file)
        } catch {
            item.state = .refused
            item.message = "cannot read \(item.file): \(HarnessError.describe(error))"
            return item
        }
        let outcome = await Posting.post(document, pairing)
        apply(outcome, to: &item)
        return item
    }
}
