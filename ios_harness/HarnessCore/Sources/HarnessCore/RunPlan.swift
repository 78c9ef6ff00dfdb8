// Mirror of RunPlan.kt.
import Foundation

/// One run to do: an artifact under one of its `run.settings`. `skip` is set when the run is recorded as
/// `skipped` without being attempted (an artifact of a target this platform does not run).
public struct PlannedRun: Equatable {
    public let artifact: Artifact
    public let setting: String
    public let warmup: Int
    public let iterations: Int
    public let threads: Int
    public let skip: String?

    public init(artifact: Artifact, setting: String, warmup: Int, iterations: Int, threads: Int, skip: String? = nil) {
        self.artifact = artifact
        self.setting = setting
        self.warmup = warmup
        self.iterations = iterations
        self.threads = threads
        self.skip = skip
    }
}

/// The runs of a bundle on one platform, in order: for each artifact, for each setting of its `run.settings`. An
/// artifact whose target the app does not run (`targets`) gets one skipped run per setting, with the error
/// "<target> does not run on <platform>". `cooldownSeconds`: a pause between runs (not before the first).
public struct RunPlan {
    public let runs: [PlannedRun]
    public let cooldownSeconds: Double

    public init(_ runs: [PlannedRun], cooldownSeconds: Double = 0.0) {
        self.runs = runs
        self.cooldownSeconds = cooldownSeconds
    }

    public var size: Int { runs.count }

    /// The plan of `bundle` for `platform` (e.g. `iOS`), whose app runs the artifacts of `targets` (e.g.
    /// `coreml`). `warmup`, `iterations`, `threads`: overrides of every artifact's `run` (nil: the bundle's).
    /// `only`: only the artifacts of these names (empty: all).
    public static func make(
        _ bundle: Bundle,
        platform: String,
        targets: Set<String>,
        warmup: Int? = nil,
        iterations: Int? = nil,
        threads: Int? = nil,
        only: Set<String> = [],
        cooldownSeconds: Double = 0.0
    ) throws -> RunPlan {
        if let warmup, warmup < 0 { throw HarnessError("warmup must be 0 or more, not \(warmup)") }
        if let iterations, iterations < 1 { throw HarnessError("iterations must be 1 or more, not \(iterations)") }
        if let threads, threads < 1 { throw HarnessError("threads must be 1 or more, not \(threads)") }
        if cooldownSeconds < 0 || cooldownSeconds.isNaN { throw HarnessError("the cooldown must be 0 s or more") }
        let missing = only.subtracting(bundle.artifacts.map { $0.name })
        if !missing.isEmpty {
            throw HarnessError("\(missing.sorted().first!): not in the bundle (it holds: " +
                               "\(bundle.artifacts.map { $0.name }.joined(separator: ", ")))")
        }
        var runs: [PlannedRun] = []
        for artifact in bundle.artifacts {
            if !only.isEmpty && !only.contains(artifact.name) { continue }
            let skip: String? = targets.contains(artifact.target) ? nil : "\(artifact.target) does not run on \(platform)"
            for setting in artifact.run.settings {
                runs.append(PlannedRun(artifact: artifact, setting: setting, warmup: warmup ?? artifact.run.warmup,
                                       iterations: iterations ?? artifact.run.iterations,
                                       threads: threads ?? artifact.run.threads, skip: skip))
            }
        }
        return RunPlan(runs, cooldownSeconds: cooldownSeconds)
    }
}
