// The app's state: the bundles on the device, the run in progress (on a background thread), its summary, the
// pairing with `results listen` and the outbox of results to post.
import Foundation
import HarnessCore
import SwiftUI
import UIKit

/// Not actor-isolated as a whole: the harness thread reports through DispatchQueue.main, the posting functions
/// are @MainActor. Every @Published value is changed on the main thread.
final class AppModel: ObservableObject {
    @Published var bundles: [BundleStore.Found] = []
    @Published var zips: [URL] = []
    @Published var selected: BundleStore.Found?
    @Published var running = false
    @Published var status = "Open a bundle: a .zip or a folder from `shvit-edge bundle`."
    @Published var log: [String] = []
    @Published var outcome: RunOutcome?
    @Published var problem: String?
    @Published var pairing: Pairing? = PairingStore.load()
    @Published var outbox: [OutboxItem] = Outbox.load()
    @Published var cooldownSeconds: Double = UserDefaults.standard.double(forKey: "shvit-edge.cooldown")
    @Published var postAutomatically: Bool = UserDefaults.standard.object(forKey: "shvit-edge.post") as? Bool ?? true

    private let stopFlag = StopFlag()
    private var retryTimer: Timer?

    /// Set from the screen, read by the harness thread between inferences.
    final class StopFlag: @unchecked Sendable {
        private let lock = NSLock()
        private var value = false
        func set(_ v: Bool) { lock.lock(); value = v; lock.unlock() }
        func get() -> Bool { lock.lock(); defer { lock.unlock() }; return value }
    }

    init() {
        refresh()
        retryTimer = Timer.scheduledTimer(withTimeInterval: 30, repeats: true) { [weak self] _ in
            Task { @MainActor in await self?.postDue() }
        }
    }

    func refresh() {
        let found = BundleStore.list()
        bundles = found.bundles
        zips = found.zips
        if let selected, !bundles.contains(selected) { self.selected = nil }
        if selected == nil { selected = bundles.last }
    }

    func setCooldown(_ seconds: Double) {
        cooldownSeconds = seconds
        UserDefaults.standard.set(seconds, forKey: "shvit-edge.cooldown")
    }

    func setPostAutomatically(_ on: Bool) {
        postAutomatically = on
        UserDefaults.standard.set(on, forKey: "shvit-edge.post")
    }

    // MARK: bundles

    /// A bundle handed to the app (file importer, AirDrop, "Open in"): import it and select it.
    func open(_ url: URL) {
        problem = nil
        status = "importing \(url.lastPathComponent) ..."
        Task.detached(priority: .userInitiated) {
            do {
                let root = try BundleStore.importItem(url) { line in
                    DispatchQueue.main.async { self.status = line }
                }
                await MainActor.run {
                    self.refresh()
                    self.selected = self.bundles.first { $0.root.standardizedFileURL == root.standardizedFileURL }
                        ?? BundleStore.Found(root: root)
                    self.status = "imported \(root.lastPathComponent): tap Run"
                }
            } catch {
                let text = HarnessError.describe(error)
                await MainActor.run {
                    self.problem = text
                    self.status = "not imported"
                }
            }
        }
    }

    func delete(_ found: BundleStore.Found) {
        let fm = FileManager.default
        // an imported bundle goes with its import folder; one copied into Documents by hand goes alone
        var target = found.root
        let imports = BundleStore.bundlesFolder.standardizedFileURL.path + "/"
        while target.deletingLastPathComponent().standardizedFileURL.path + "/" != imports,
              target.standardizedFileURL.path.hasPrefix(imports) {
            target = target.deletingLastPathComponent()
        }
        try? fm.removeItem(at: target)
        if selected == found { selected = nil }
        refresh()
    }

    // MARK: running

    func run() {
        guard let bundle = selected, !running else { return }
        running = true
        problem = nil
        outcome = nil
        log = []
        stopFlag.set(false)
        status = "checking \(bundle.title) ..."
        UIApplication.shared.isIdleTimerDisabled = true // a sweep takes minutes: the screen stays on
        let cooldown = cooldownSeconds
        let flag = stopFlag
        Thread.detachNewThread {
            let result: Result<RunOutcome, Error>
            do {
                result = .success(try BundleRunner.run(bundle.root, cooldownSeconds: cooldown, message: { line in
                    DispatchQueue.main.async { self.note(line) }
                }, shouldStop: { flag.get() }))
            } catch {
                result = .failure(error)
            }
            DispatchQueue.main.async { self.finished(result) }
        }
    }

    func stop() {
        stopFlag.set(true)
        status = "stopping after the current inference ..."
    }

    private func note(_ line: String) {
        status = line
        log.append(line)
        if log.count > 400 { log.removeFirst(log.count - 400) }
    }

    private func finished(_ result: Result<RunOutcome, Error>) {
        running = false
        UIApplication.shared.isIdleTimerDisabled = false
        switch result {
        case let .success(outcome):
            self.outcome = outcome
            status = "\(outcome.okCount) ok, \(outcome.failedCount) failed, \(outcome.skippedCount) skipped; " +
                "written to Documents/Results/\(outcome.file.lastPathComponent)"
            enqueue(outcome.file)
        case let .failure(error):
            problem = HarnessError.describe(error)
            status = "the bundle was refused; nothing ran"
        }
    }

    // MARK: posting

    func pair(_ text: String) {
        do {
            let parsed = try Pairing.parse(text)
            pairing = parsed
            PairingStore.save(parsed)
            problem = nil
            // a 401 was a wrong token: with a new pairing, those results go again
            for k in outbox.indices where outbox[k].state == .needsPairing {
                outbox[k].state = .pending
                outbox[k].notBefore = 0
            }
            Outbox.save(outbox)
            Task { await postDue() }
        } catch {
            problem = HarnessError.describe(error)
        }
    }

    func unpair() {
        pairing = nil
        PairingStore.save(nil)
    }

    func enqueue(_ file: URL) {
        if outbox.contains(where: { $0.file == file.lastPathComponent }) { return }
        outbox.append(OutboxItem(file: file.lastPathComponent, state: .pending, message: "not sent yet", attempts: 0, notBefore: 0))
        Outbox.save(outbox)
        if postAutomatically { Task { await postDue() } }
    }

    /// Send every pending item whose wait is over (all of them when `force`).
    @MainActor
    func postDue(force: Bool = false) async {
        guard let pairing else { return }
        let now = Date().timeIntervalSince1970
        for item in outbox where item.state == .pending && (force || item.notBefore <= now) {
            let sent = await Outbox.send(item, pairing)
            if let k = outbox.firstIndex(where: { $0.file == sent.file }) { outbox[k] = sent }
            Outbox.save(outbox)
        }
    }

    /// Send one item now, whatever its state (the user asked).
    @MainActor
    func resend(_ item: OutboxItem) async {
        guard let pairing else {
            problem = "pair with `shvit-edge results listen` first"
            return
        }
        let sent = await Outbox.send(item, pairing)
        if let k = outbox.firstIndex(where: { $0.file == sent.file }) { outbox[k] = sent }
        Outbox.save(outbox)
    }

    func forget(_ item: OutboxItem) {
        outbox.removeAll { $0.file == item.file }
        Outbox.save(outbox)
    }
}
