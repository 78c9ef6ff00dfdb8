// Mirror of Harness.kt.
import Foundation

/// A runtime the app links (Core ML here; LiteRT, ExecuTorch on Android): loads an artifact under one setting.
public protocol Runtime: AnyObject {
    /// e.g. `Core ML` (a run's `runtime`)
    var name: String { get }

    /// the runtime's version (a run's `runtime_version`), or nil when unknown
    var version: String? { get }

    /// Why `setting` cannot run on this device (the run is recorded as skipped with it), or nil when it can.
    func isAvailable(_ setting: String) -> String?

    /// Whether `compile` does something: it is then timed on its own as `compile_ms` (Core ML).
    var compiles: Bool { get }

    /// Compile the artifact for `setting` before `load` (Core ML's `MLModel.compileModel(at:)`).
    func compile(_ artifact: Artifact, _ setting: String) throws

    /// Load `artifact` (its file: `Artifact.path`) under `setting` with `threads` CPU threads: timed as `load_ms`.
    func load(_ artifact: Artifact, _ setting: String, _ threads: Int) throws -> Session

    /// What `setting` lets the runtime do to precision (a run's `precision_flags`), e.g. `allow_fp16`.
    func precisionFlags(_ setting: String) -> [String]
}

public extension Runtime {
    var compiles: Bool { false }
    func compile(_ artifact: Artifact, _ setting: String) throws {}
    func precisionFlags(_ setting: String) -> [String] { [] }
}

/// A loaded artifact.
public protocol Session: AnyObject {
    /// One inference on `input` (chunk `chunkIndex` of the input tensor, `batch` samples): the output rows,
    /// `batch * classes` float32 values in row order (float16 outputs converted, a classifier's probabilities in
    /// class order).
    func run(_ chunkIndex: Int, _ input: Chunk) throws -> [Float]

    /// Called once after the timed load, untimed, with every chunk the run will feed: convert them to the runtime's
    /// own input buffers here, so that `run` times the inference and not the conversion.
    func prepare(_ chunks: [Chunk]) throws

    /// What the runtime observed, for the run's `details` (e.g. Core ML's compute plan), or nil.
    func details() -> JsonObject?

    func close()
}

public extension Session {
    func prepare(_ chunks: [Chunk]) throws {}
    func details() -> JsonObject? { nil }
}

/// A monotonic clock (the system's; tests use a fake one) and a way to wait.
public protocol Clock: AnyObject {
    func nanoTime() -> Int64
    func sleepMillis(_ millis: Int64)
}

/// Kotlin's `Clock.System`: the monotonic uptime clock, and Thread.sleep.
public final class SystemClock: Clock {
    public init() {}
    public func nanoTime() -> Int64 { Int64(bitPattern: DispatchTime.now().uptimeNanoseconds) }
    public func sleepMillis(_ millis: Int64) { Thread.sleep(forTimeInterval: Double(millis) / 1000.0) }
}

/// What the device says about itself around a run.
public protocol DeviceProbe: AnyObject {
    /// The thermal state (`nominal`/`fair`/`serious`/`critical` on iOS, `none`/`light`/... on Android), or nil.
    func thermal() -> String?

    /// The process's peak memory in MB so far (or the best measure the platform gives), or nil.
    func peakMemoryMb() -> Double?

    /// Called once before the run is loaded: e.g. reset the peak-memory mark.
    func beforeRun()

    /// Facts for the run's `details` at `phase` (`before` or `after` the run), e.g. CPU frequencies.
    func details(_ phase: String) -> JsonObject
}

public extension DeviceProbe {
    func beforeRun() {}
    func details(_ phase: String) -> JsonObject { JsonObject() }
}

/// Kotlin's `DeviceProbe.None`.
public final class NoDeviceProbe: DeviceProbe {
    public init() {}
    public func thermal() -> String? { nil }
    public func peakMemoryMb() -> Double? { nil }
}

/// Progress of a run: `phase` is `load`, `first`, `warmup`, `iterations`, `outputs`, `ok`, `failed`, `skipped`
/// or `cooldown`. (Kotlin: a fun interface with `update(artifact, setting, phase, i, n)`.)
public typealias Progress = (_ artifact: String, _ setting: String, _ phase: String, _ i: Int, _ n: Int) -> Void

/// A run's `output`: `[samples, classes]` float32, inline (base64) or as a file beside the document.
public struct RunOutput: Equatable {
    public let shape: [Int]
    /// standard base64 of the raw little-endian float32 values (nil when `file` is set)
    public let base64: String?
    public let file: String?
    public let sha256: String?

    public init(_ shape: [Int], _ base64: String?, _ file: String? = nil, _ sha256: String? = nil) {
        self.shape = shape
        self.base64 = base64
        self.file = file
        self.sha256 = sha256
    }

    /// The values (inline only).
    public func values(_ place: String = "output") throws -> [Float] {
        guard let text = base64 else { throw HarnessError("\(place): the outputs are in the file \(file ?? "null"), not inline") }
        let raw = try Tensors.decodeBase64(text, where: place)
        let expected = shape.reduce(Int64(4)) { $0 * Int64($1) }
        if Int64(raw.count) != expected {
            throw HarnessError("\(place) holds \(raw.count) bytes; its shape \(Tensors.shapeText(shape)) float32 takes \(expected)")
        }
        return try Tensors.bytesToFloats(raw)
    }

    public static func of(_ outputs: Outputs) -> RunOutput { RunOutput(outputs.shape, Tensors.base64(outputs.values)) }
}

/// One run as a result document records it (docs/bundle.md section 5). Optional fields that the schema allows to
/// be JSON null (`error`, `peak_memory_mb`, `thermal_before`, `thermal_after`) are written as null only when
/// named in `explicitNulls` (they were measured and unknown), and left out otherwise; the other optional fields
/// are left out when nil. (Kotlin's `copy(...)` is a `var` copy here.)
public struct RunRecord: Equatable {
    public var artifact: String
    public var artifactSha256: String
    public var runtime: String
    public var setting: String
    public var status: String
    public var error: String?
    public var runtimeVersion: String?
    public var threads: Int?
    public var meaning: String?
    public var warmup: Int?
    public var loadMs: Double?
    public var compileMs: Double?
    public var firstInferenceMs: Double?
    public var latenciesMs: [Double]?
    public var precisionFlags: [String]?
    public var peakMemoryMb: Double?
    public var thermalBefore: String?
    public var thermalAfter: String?
    public var output: RunOutput?
    public var appParity: JsonObject?
    public var details: JsonObject?
    public var explicitNulls: Set<String>

    public init(artifact: String, artifactSha256: String, runtime: String, setting: String, status: String,
                error: String? = nil, runtimeVersion: String? = nil, threads: Int? = nil, meaning: String? = nil,
                warmup: Int? = nil, loadMs: Double? = nil, compileMs: Double? = nil, firstInferenceMs: Double? = nil,
                latenciesMs: [Double]? = nil, precisionFlags: [String]? = nil, peakMemoryMb: Double? = nil,
                thermalBefore: String? = nil, thermalAfter: String? = nil, output: RunOutput? = nil,
                appParity: JsonObject? = nil, details: JsonObject? = nil, explicitNulls: Set<String> = []) {
        self.artifact = artifact
        self.artifactSha256 = artifactSha256
        self.runtime = runtime
        self.setting = setting
        self.status = status
        self.error = error
        self.runtimeVersion = runtimeVersion
        self.threads = threads
        self.meaning = meaning
        self.warmup = warmup
        self.loadMs = loadMs
        self.compileMs = compileMs
        self.firstInferenceMs = firstInferenceMs
        self.latenciesMs = latenciesMs
        self.precisionFlags = precisionFlags
        self.peakMemoryMb = peakMemoryMb
        self.thermalBefore = thermalBefore
        self.thermalAfter = thermalAfter
        self.output = output
        self.appParity = appParity
        self.details = details
        self.explicitNulls = explicitNulls
    }

    public static let OK = "ok"
    public static let FAILED = "failed"
    public static let SKIPPED = "skipped"
    public static let IN_APP_WALL_TIME = "in-app wall time"
    public static let HOST_WALL_TIME = "host wall time"
    public static let INTERPRETED = "interpreter, not a latency"
    public static let MEANINGS = [IN_APP_WALL_TIME, HOST_WALL_TIME, INTERPRETED]
    public static let STATUSES = [OK, FAILED, SKIPPED]
}

/// Stops a run between inferences when the user asks (`Harness.shouldStop`).
public struct StoppedError: Error, LocalizedError {
    public init() {}
    public var errorDescription: String? { "stopped by the user before the run completed" }
}

/// The run protocol of docs/bundle.md section 4, exactly (Python `worker.py`), against abstract `runtimes` (by
/// artifact target: `coreml` here). The bundle must have been opened with `Bundle.open` (every file checked)
/// before: nothing runs from an unchecked bundle.
///
/// For each planned run: thermal_before; load, timed (`compile_ms` first, where the runtime compiles), then
/// `Session.prepare` (untimed); the first inference on chunk 0, timed; `warmup` untimed runs on chunk `i mod chunks`; `iterations` runs on chunk
/// `i mod chunks`, each timed alone, every latency kept in order; one untimed pass over every chunk in order for
/// the outputs (padded rows dropped); peak memory and thermal_after. A run is never dropped: a setting the device
/// lacks is `skipped` with why, a run that throws is `failed` with the error and what was measured before it.
/// (Swift catches what a runtime throws; a crash of the runtime ends the app, as on Android a native abort does.)
public final class Harness {
    public let bundle: Bundle
    public let runtimes: [String: Runtime]
    public let clock: Clock
    public let probe: DeviceProbe
    public let progress: Progress?
    /// the runs' `meaning`
    public let meaning: String
    /// compute `app_parity` (the quick metrics against the bundle's reference, for the app's own screen)
    public let appParity: Bool
    /// polled between inferences: true stops the current run (recorded as failed) and the rest (failed, not run)
    public let shouldStop: () -> Bool
    /// called with each run's record as soon as it is done (e.g. to keep a journal, or to update a screen)
    public let onRecord: ((RunRecord) -> Void)?

    private var inputs: [String: Tensor] = [:]
    private var references: [String: Tensor] = [:]
    private var stopRequested = false

    public init(_ bundle: Bundle, _ runtimes: [String: Runtime], clock: Clock = SystemClock(),
                probe: DeviceProbe = NoDeviceProbe(), progress: Progress? = nil,
                meaning: String = RunRecord.IN_APP_WALL_TIME, appParity: Bool = true,
                shouldStop: @escaping () -> Bool = { false }, onRecord: ((RunRecord) -> Void)? = nil) {
        self.bundle = bundle
        self.runtimes = runtimes
        self.clock = clock
        self.probe = probe
        self.progress = progress
        self.meaning = meaning
        self.appParity = appParity
        self.shouldStop = shouldStop
        self.onRecord = onRecord
    }

    /// Every run of `plan`, in order, one record each.
    public func run(_ plan: RunPlan) -> [RunRecord] {
        var records: [RunRecord] = []
        records.reserveCapacity(plan.size)
        var attempted = 0
        var stopped = false
        for planned in plan.runs {
            var record: RunRecord
            if stopped {
                record = base(planned, runtimes[planned.artifact.target])
                record.status = RunRecord.FAILED
                record.error = "not run: the user stopped the bundle's runs"
            } else {
                let runtime = runtimes[planned.artifact.target]
                let why = planned.skip ?? (runtime == nil ? "\(planned.artifact.target) does not run here"
                                                          : runtime!.isAvailable(planned.setting))
                if let why {
                    record = base(planned, runtime)
                    record.status = RunRecord.SKIPPED
                    record.error = why
                } else {
                    if attempted > 0 && plan.cooldownSeconds > 0 {
                        progress?(planned.artifact.name, planned.setting, "cooldown", 0, 1)
                        clock.sleepMillis(Int64(plan.cooldownSeconds * 1000))
                    }
                    attempted += 1
                    let r = attempt(planned, runtime!)
                    if stopRequested { stopped = true }
                    record = r
                }
            }
            if record.status == RunRecord.SKIPPED {
                progress?(planned.artifact.name, planned.setting, "skipped", 1, 1)
            }
            records.append(record)
            onRecord?(record)
        }
        return records
    }

    private func base(_ planned: PlannedRun, _ runtime: Runtime?) -> RunRecord {
        let a = planned.artifact
        return RunRecord(
            artifact: a.name, artifactSha256: a.sha256,
            runtime: runtime?.name ?? Harness.runtimeTitle(a.target),
            setting: planned.setting, status: RunRecord.SKIPPED,
            runtimeVersion: runtime?.version,
            threads: planned.threads, meaning: meaning, warmup: planned.warmup)
    }

    private func ms(_ start: Int64, _ end: Int64) -> Double { Double(end - start) / 1e6 }

    private func attempt(_ planned: PlannedRun, _ runtime: Runtime) -> RunRecord {
        let a = planned.artifact
        let name = a.name
        let setting = planned.setting
        var record = base(planned, runtime)
        let flags = runtime.precisionFlags(setting)
        record.precisionFlags = flags.isEmpty ? nil : flags
        var nulls = Set<String>()
        var latencies: [Double] = []
        var details = JsonObject()
        var session: Session?
        defer { session?.close() }
        do {
            let input: Tensor
            if let cached = inputs[a.input.tensor] {
                input = cached
            } else {
                input = try bundle.inputOf(a)
                inputs[a.input.tensor] = input
            }
            let chunks = Tensors.chunks(input, a.batch)
            if chunks.isEmpty { throw HarnessError("the input tensor \(a.input.tensor) holds no samples") }
            probe.beforeRun()
            details.putAll(probe.details("before"))
            let thermalBefore = probe.thermal()
            if thermalBefore == nil { nulls.insert("thermal_before") }
            record.thermalBefore = thermalBefore

            progress?(name, setting, "load", 0, 1)
            if runtime.compiles {
                let t0 = clock.nanoTime()
                try runtime.compile(a, setting)
                record.compileMs = ms(t0, clock.nanoTime())
            }
            let t0 = clock.nanoTime()
            let loaded = try runtime.load(a, setting, planned.threads)
            session = loaded
            record.loadMs = ms(t0, clock.nanoTime())
            try loaded.prepare(chunks)

            progress?(name, setting, "first", 0, 1)
            let t1 = clock.nanoTime()
            _ = try loaded.run(0, chunks[0])
            record.firstInferenceMs = ms(t1, clock.nanoTime())

            for i in 0..<planned.warmup {
                if shouldStop() { throw StoppedError() }
                progress?(name, setting, "warmup", i, planned.warmup)
                _ = try loaded.run(i % chunks.count, chunks[i % chunks.count])
            }
            for i in 0..<planned.iterations {
                if shouldStop() { throw StoppedError() }
                progress?(name, setting, "iterations", i, planned.iterations)
                let chunk = chunks[i % chunks.count]
                let t = clock.nanoTime()
                _ = try loaded.run(chunk.index, chunk)
                latencies.append(ms(t, clock.nanoTime()))
            }
            var outputs: [[Float]] = []
            outputs.reserveCapacity(chunks.count)
            for chunk in chunks {
                if shouldStop() { throw StoppedError() }
                progress?(name, setting, "outputs", chunk.index, chunks.count)
                outputs.append(try loaded.run(chunk.index, chunk))
            }
            let assembled = try Tensors.assemble(chunks, outputs)
            if let observed = loaded.details() { details.putAll(observed) }
            record.latenciesMs = latencies
            record.output = RunOutput.of(assembled)
            record.appParity = try appParity ? quickParity(a, assembled) : nil
            record = finish(record, &nulls, &details)
            record.status = RunRecord.OK
            record.error = nil
            nulls.insert("error")
            progress?(name, setting, "ok", 1, 1)
            record.explicitNulls = nulls
            return record
        } catch {
            if error is StoppedError { stopRequested = true }
            if let observed = session?.details() { details.putAll(observed) }
            record.latenciesMs = record.loadMs != nil ? latencies : nil
            var failed = finish(record, &nulls, &details)
            progress?(name, setting, "failed", 1, 1)
            failed.status = RunRecord.FAILED
            failed.error = String(HarnessError.describe(error).prefix(4096))
            failed.explicitNulls = nulls
            return failed
        }
    }

    /// peak memory, thermal_after and the details, measured after the run (also after a failed one).
    private func finish(_ record: RunRecord, _ nulls: inout Set<String>, _ details: inout JsonObject) -> RunRecord {
        var record = record
        let peak = probe.peakMemoryMb()
        if peak == nil { nulls.insert("peak_memory_mb") }
        let thermal = probe.thermal()
        if thermal == nil { nulls.insert("thermal_after") }
        details.putAll(probe.details("after"))
        record.peakMemoryMb = peak
        record.thermalAfter = thermal
        record.details = details.isEmpty ? nil : details
        return record
    }

    /// The quick metrics of `outputs` against the artifact's reference (the host judges again, never trusting them).
    private func quickParity(_ a: Artifact, _ outputs: Outputs) throws -> JsonObject {
        let reference: Tensor
        if let cached = references[a.output.reference] {
            reference = cached
        } else {
            reference = try bundle.referenceOf(a)
            references[a.output.reference] = reference
        }
        if reference.shape != outputs.shape {
            return JsonObject([
                "pass": .bool(false),
                "problems": .array([.string("the outputs are \(Tensors.shapeText(outputs.shape)); the reference is \(Tensors.shapeText(reference.shape))")]),
            ])
        }
        let m = Parity.compare(outputs.values, reference.floats!, outputs.samples)
        let problems = Parity.judge(m, a.tolerance)
        var json = m.toJson()
        json["pass"] = .bool(problems.isEmpty)
        json["problems"] = .array(problems.map { .string($0) })
        return json
    }

    /// The usual name of the runtime of `target`, for runs of targets no runtime here runs.
    public static func runtimeTitle(_ target: String) -> String {
        switch target {
        case "tflite": return "LiteRT"
        case "executorch": return "ExecuTorch"
        case "coreml": return "Core ML"
        case "onnx": return "ONNX Runtime"
        default: return target
        }
    }
}
