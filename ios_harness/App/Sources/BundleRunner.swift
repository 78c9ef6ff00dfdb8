// One bundle, run end to end, the same way from the screen and from the XCTest target (HarnessRunTests):
// Bundle.open (every file's size and sha256, every path rule: a refused bundle runs nothing), RunPlan for iOS
// (Core ML artifacts; the others are recorded as skipped: "<target> does not run on iOS"), Harness with the Core ML
// runtime, the device probe and the system clock, then the result document written atomically to
// Documents/Results. Call it off the main thread: it blocks until every run is done.
import Foundation
import HarnessCore

struct RunSummary: Identifiable, Equatable {
    let id: Int
    let artifact: String
    let setting: String
    let status: String
    let error: String?
    let p50: Double?
    let loadMs: Double?
    let compileMs: Double?
    let cosine: Double?
    let parityPass: Bool?
    let problems: [String]

    init(_ index: Int, _ r: RunRecord) {
        id = index
        artifact = r.artifact
        setting = r.setting
        status = r.status
        error = r.error
        p50 = r.latenciesMs.flatMap { Stats.latency($0)?.p50 }
        loadMs = r.loadMs
        compileMs = r.compileMs
        cosine = r.appParity?["cosine"]?.number
        parityPass = r.appParity?["pass"]?.boolValue
        problems = r.appParity?["problems"]?.arrayValue?.compactMap { $0.stringValue } ?? []
    }
}

struct RunOutcome {
    let document: ResultDocument
    let file: URL
    let summaries: [RunSummary]

    var okCount: Int { summaries.filter { $0.status == RunRecord.OK }.count }
    var failedCount: Int { summaries.filter { $0.status == RunRecord.FAILED }.count }
    var skippedCount: Int { summaries.filter { $0.status == RunRecord.SKIPPED }.count }
    var parityFailures: Int { summaries.filter { $0.parityPass == false }.count }
}

enum BundleRunner {
    static let platform = "iOS"
    static let targets: Set<String> = ["coreml"]

    /// Run the bundle in the folder `root`; `message` gets one-line progress (checking files, each run's phase),
    /// `shouldStop` is polled between inferences. Throws (a HarnessError, one line) when the bundle is refused;
    /// a run that fails is in the document as failed, never thrown.
    static func run(_ root: URL, cooldownSeconds: Double = 0, iterations: Int? = nil, warmup: Int? = nil,
                    message: @escaping (String) -> Void = { _ in },
                    shouldStop: @escaping () -> Bool = { false }) throws -> RunOutcome {
        message("checking \(root.lastPathComponent) ...")
        let bundle = try HarnessCore.Bundle.open(root, progress: message)
        let plan = try RunPlan.make(bundle, platform: platform, targets: targets, warmup: warmup,
                                    iterations: iterations, cooldownSeconds: cooldownSeconds)
        var done = 0
        let total = plan.size
        let harness = Harness(
            bundle, ["coreml": CoreMLRuntime()], clock: SystemClock(), probe: IOSDeviceProbe(),
            progress: { artifact, setting, phase, i, n in
                switch phase {
                case "iterations", "warmup":
                    // every inference would flood the screen: every 10th, and the last
                    if i % 10 == 0 || i == n - 1 { message("[\(done + 1)/\(total)] \(artifact) \(setting): \(phase) \(i + 1)/\(n)") }
                default:
                    message("[\(done + 1)/\(total)] \(artifact) \(setting): \(phase)")
                }
            },
            meaning: RunRecord.IN_APP_WALL_TIME, appParity: true, shouldStop: shouldStop,
            onRecord: { _ in done += 1 })
        let records = harness.run(plan)
        let document = ResultDocument.of(bundle, DeviceFacts.harnessInfo(), DeviceFacts.deviceInfo(), records)
        let file = try BundleStore.resultFile(for: bundle)
        try document.write(file)
        message("wrote \(file.lastPathComponent)")
        return RunOutcome(document: document, file: file,
                          summaries: records.enumerated().map { RunSummary($0.offset, $0.element) })
    }

    /// Post `outcome`'s document with the pairing JSON of `results listen` (the XCTest target's SHVIT_EDGE_PAIRING):
    /// (HTTP status, 0 when there was no answer; the answer's one line).
    static func post(_ outcome: RunOutcome, pairingJSON: String) async -> (status: Int, message: String) {
        do {
            let pairing = try Pairing.parse(pairingJSON)
            let answer = await Posting.post(outcome.document, pairing)
            return (answer.status, answer.message)
        } catch {
            return (0, HarnessError.describe(error))
        }
    }
}
