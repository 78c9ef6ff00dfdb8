// Mirror of android_harness/core/src/test/kotlin/dev/shvitedge/harness/core/TestSupport.kt.
import Foundation
import XCTest
@testable import HarnessCore

/// Where the golden vectors are: the environment variable GOLDEN_DIR, else tests/golden of this repository
/// (four folders up from this file: Tests/HarnessCoreTests -> HarnessCore -> ios_harness -> the repository).
enum Golden {
    static let dir: URL = {
        if let path = ProcessInfo.processInfo.environment["GOLDEN_DIR"], !path.isEmpty {
            return URL(fileURLWithPath: path, isDirectory: true).standardizedFileURL
        }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../../../tests/golden", isDirectory: true).standardizedFileURL
    }()

    static var bundle: URL { dir.appendingPathComponent("bundle", isDirectory: true) }

    static func json(_ name: String) throws -> JsonValue {
        try Json.readFile(dir.appendingPathComponent(name), where: name, maxBytes: 64 << 20)
    }
}

enum Temp {
    static func dir(_ prefix: String = "core-test") throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    static func copyTree(_ from: URL, _ to: URL) throws {
        try FileManager.default.copyItem(at: from, to: to)
    }
}

/// Little-endian float32 values of a file, read independently of the core.
func floatsOf(_ file: URL) throws -> [Float] {
    let data = try Data(contentsOf: file)
    return (0..<(data.count / 4)).map { k in
        var bits: UInt32 = 0
        for j in 0..<4 { bits |= UInt32(data[data.startIndex + k * 4 + j]) << (8 * UInt32(j)) }
        return Float(bitPattern: bits)
    }
}

/// A clock that moves by a known step on every reading: latencies are multiples of 0.25 ms.
final class FakeClock: HarnessCore.Clock {
    var now: Int64
    var calls = 0
    var sleeps: [Int64] = []

    init(_ now: Int64 = 1_000_000_000) { self.now = now }

    func nanoTime() -> Int64 {
        let t = now
        now += 250_000 * Int64(1 + calls % 7)
        calls += 1
        return t
    }

    func sleepMillis(_ millis: Int64) { sleeps.append(millis) }
}

/// thermal: `none` before a run, `light` after it; a fixed peak memory; CPU frequencies as the app records them.
final class FakeProbe: DeviceProbe {
    private var thermalCalls = 0

    func thermal() -> String? {
        defer { thermalCalls += 1 }
        return thermalCalls % 2 == 0 ? "none" : "light"
    }

    func peakMemoryMb() -> Double? { 64.5 }

    func details(_ phase: String) -> JsonObject {
        JsonObject(["cpu_freq_khz_\(phase)": .object(JsonObject([
            "cpu0": .int(phase == "before" ? 1_804_800 : 2_419_200),
            "cpu7": .int(phase == "before" ? 2_956_800 : 2_803_200),
        ]))])
    }
}

/// Errors named as the Kotlin tests' JVM exceptions, so that `HarnessError.describe` gives the same text.
struct RuntimeException: Error, LocalizedError {
    let text: String
    init(_ text: String) { self.text = text }
    var errorDescription: String? { text }
}

struct IllegalStateException: Error, LocalizedError {
    let text: String
    init(_ text: String) { self.text = text }
    var errorDescription: String? { text }
}

/// A runtime that answers each chunk with rows from `answer` (by default the bundle's reference rows of the chunk's
/// samples, padded rows repeating the chunk's first sample) and records every call.
final class FakeRuntime: Runtime {
    let name: String
    let version: String?
    let unavailable: [String: String]
    let flags: [String: [String]]
    var answer: ((Artifact, Chunk) throws -> [Float])?
    /// throw at this call of Session.run (0 = the first inference), or at load when -1
    var failAt: Int?
    let compiles: Bool

    var calls: [String] = []
    var chunkCalls: [Int] = []
    var loads = 0
    var compilesDone = 0
    var closes = 0

    init(_ name: String, _ version: String?, unavailable: [String: String] = [:], flags: [String: [String]] = [:],
         answer: ((Artifact, Chunk) throws -> [Float])? = nil, failAt: Int? = nil, compiles: Bool = false) {
        self.name = name
        self.version = version
        self.unavailable = unavailable
        self.flags = flags
        self.answer = answer
        self.failAt = failAt
        self.compiles = compiles
    }

    func isAvailable(_ setting: String) -> String? { unavailable[setting] }
    func precisionFlags(_ setting: String) -> [String] { flags[setting] ?? [] }
    func compile(_ artifact: Artifact, _ setting: String) throws { compilesDone += 1 }

    func load(_ artifact: Artifact, _ setting: String, _ threads: Int) throws -> Session {
        loads += 1
        calls.append("load \(artifact.name) \(setting) \(threads)")
        if failAt == -1 { throw IllegalStateException("cannot load \(artifact.name)") }
        return FakeSession(self, artifact)
    }

    final class FakeSession: Session {
        let runtime: FakeRuntime
        let artifact: Artifact
        var k = 0

        init(_ runtime: FakeRuntime, _ artifact: Artifact) {
            self.runtime = runtime
            self.artifact = artifact
        }

        func run(_ chunkIndex: Int, _ input: Chunk) throws -> [Float] {
            if runtime.failAt == k { throw RuntimeException("inference \(k) failed") }
            k += 1
            runtime.chunkCalls.append(chunkIndex)
            precondition(input.index == chunkIndex)
            guard let answer = runtime.answer else { throw IllegalStateException("no answer") }
            return try answer(artifact, input)
        }

        func close() { runtime.closes += 1 }
    }

    /// The reference rows of `chunk`'s samples, padded rows repeating its first sample's row.
    static func referenceRows(_ bundle: HarnessCore.Bundle) -> (Artifact, Chunk) throws -> [Float] {
        return { a, chunk in
            let ref = try bundle.referenceOf(a)
            let classes = ref.shape[1]
            var out = [Float](repeating: 0, count: chunk.batch * classes)
            for row in 0..<chunk.batch {
                let sample = row < chunk.realRows ? chunk.start + row : chunk.start
                for c in 0..<classes { out[row * classes + c] = ref.floats![sample * classes + c] }
            }
            return out
        }
    }
}

/// A synthetic bundle written by the test (not by Python): `samples` float32 NCHW inputs of 2x2 pixels, references
/// of `classes` values per sample, one artifact per target of `targets` with the given `batch` and settings.
enum SyntheticBundle {
    @discardableResult
    static func write(_ root: URL, samples: Int = 5, batch: Int = 2, classes: Int = 3,
                      targets: [(String, [String])] = [("tflite", ["xnnpack", "gpu"])],
                      warmup: Int = 3, iterations: Int = 7, threads: Int = 4) throws -> URL {
        let fm = FileManager.default
        try fm.createDirectory(at: root.appendingPathComponent("tensors"), withIntermediateDirectories: true)
        try fm.createDirectory(at: root.appendingPathComponent("artifacts"), withIntermediateDirectories: true)
        let h = 2
        let w = 2
        let x = (0..<(samples * 3 * h * w)).map { Float($0) * 0.5 - 3 }
        let ref = (0..<(samples * classes)).map { Float($0 % classes) + Float($0 / classes) * 10 }
        try Tensors.floatsToBytes(x).write(to: root.appendingPathComponent("tensors/input-x.f32"))
        try Tensors.floatsToBytes(ref).write(to: root.appendingPathComponent("tensors/reference-r.f32"))
        var artifacts: [JsonValue] = []
        for (target, settings) in targets {
            let name = "m.\(target)"
            let bytes = Data("model for \(target)".utf8)
            try bytes.write(to: root.appendingPathComponent("artifacts/\(name)"))
            let sha = Sha256.hex(bytes)
            let manifest = JsonObject([
                "schema_version": .int(2), "target": .string(target), "variant": .string("v"),
                "resolution": .array([.int(Int64(h)), .int(Int64(w))]), "batch": .int(Int64(batch)),
                "inputs": .array([.object(JsonObject([
                    "name": .string("image"),
                    "shape": .array([.int(Int64(batch)), .int(3), .int(Int64(h)), .int(Int64(w))]),
                    "dtype": .string("float32"), "layout": .string("NCHW"),
                ]))]),
                "artifact": .object(JsonObject(["file": .string(name), "sha256": .string(sha)])),
            ])
            try Json.write(.object(manifest), indent: 1).write(to: root.appendingPathComponent("artifacts/\(name).json"),
                                                               atomically: false, encoding: .utf8)
            artifacts.append(.object(JsonObject([
                "name": .string(name), "file": .string("artifacts/\(name)"),
                "manifest": .string("artifacts/\(name).json"), "sha256": .string(sha), "target": .string(target),
                "family": .string("f"), "variant": .string("v"), "resolution": .array([.int(Int64(h)), .int(Int64(w))]),
                "batch": .int(Int64(batch)), "precision": .string("fp32"), "quantization": .null,
                "input": .object(JsonObject(["tensor": .string("input-x"), "name": .string("image"), "kind": .string("tensor")])),
                "output": .object(JsonObject(["name": .string("logits"), "layout": .string("NC"), "reference": .string("reference-r")])),
                "tolerance": .object(JsonObject(["class": .string("fp32"), "cosine": .double(0.99999), "max_abs": .double(0.001),
                                                 "top1_agreement": .double(1.0), "sqnr_db": .null])),
                "run": .object(JsonObject(["warmup": .int(Int64(warmup)), "iterations": .int(Int64(iterations)),
                                           "threads": .int(Int64(threads)), "settings": .array(settings.map { .string($0) })])),
            ])))
        }
        try writeIndex(root, artifacts, [samples, 3, h, w], [samples, classes])
        return root
    }

    /// (Re)write bundle.json with `files` telling the truth about every file under `root`.
    static func writeIndex(_ root: URL, _ artifacts: [JsonValue], _ xShape: [Int], _ refShape: [Int]) throws {
        let fm = FileManager.default
        var paths: [String] = []
        let base = root.standardizedFileURL.path
        if let walker = fm.enumerator(atPath: base) {
            for case let relative as String in walker {
                var isDir: ObjCBool = false
                fm.fileExists(atPath: base + "/" + relative, isDirectory: &isDir)
                if !isDir.boolValue && relative != "bundle.json" { paths.append(relative) }
            }
        }
        paths.sort()
        let files: [JsonValue] = try paths.map { p in
            let url = root.appendingPathComponent(p)
            return .object(JsonObject(["path": .string(p), "sha256": .string(try Sha256.ofFile(url)),
                                       "size": .int(try SafePath.size(url))]))
        }
        let doc = JsonObject([
            "schema_version": .int(1), "kind": .string("shvit-edge-bundle"), "id": .string(String(repeating: "0", count: 64)),
            "shvit_edge_version": .string("test"), "created_at": .string("2026-01-01T00:00:00+00:00"),
            "inputs": .object(JsonObject(["images": .array([]), "samples": .int(Int64(xShape[0])), "seed": .int(0)])),
            "tensors": .object(JsonObject([
                "input-x": .object(JsonObject(["file": .string("tensors/input-x.f32"), "dtype": .string("float32"),
                                               "shape": .array(xShape.map { .int(Int64($0)) }), "layout": .string("NCHW"),
                                               "role": .string("input")])),
                "reference-r": .object(JsonObject(["file": .string("tensors/reference-r.f32"), "dtype": .string("float32"),
                                                   "shape": .array(refShape.map { .int(Int64($0)) }), "layout": .string("NC"),
                                                   "role": .string("reference")])),
            ])),
            "artifacts": .array(artifacts), "files": .array(files),
        ])
        try Json.write(.object(doc), indent: 1).write(to: root.appendingPathComponent("bundle.json"), atomically: false, encoding: .utf8)
    }

    /// Edit bundle.json's parsed value with `edit` and write it back (files unchanged).
    static func edit(_ root: URL, _ edit: (inout JsonObject) -> Void) throws {
        let url = root.appendingPathComponent("bundle.json")
        guard case var .object(doc) = try Json.readFile(url, where: "bundle.json") else { XCTFail("not an object"); return }
        edit(&doc)
        try Json.write(.object(doc), indent: 1).write(to: url, atomically: false, encoding: .utf8)
    }
}

/// Helpers to edit nested JSON objects in place (Kotlin edits its mutable maps).
extension JsonObject {
    mutating func modifyObject(_ key: String, _ change: (inout JsonObject) -> Void) {
        guard case var .object(inner) = self[key] else { return }
        change(&inner)
        self[key] = .object(inner)
    }

    mutating func modifyArrayItem(_ key: String, _ index: Int, _ change: (inout JsonObject) -> Void) {
        guard case var .array(items) = self[key], case var .object(inner) = items[index] else { return }
        change(&inner)
        items[index] = .object(inner)
        self[key] = .array(items)
    }
}

@discardableResult
func assertRefused(_ fragment: String, file: StaticString = #filePath, line: UInt = #line,
                   _ block: () throws -> Void) -> HarnessError? {
    do {
        try block()
    } catch let e as HarnessError {
        XCTAssertTrue(e.message.contains(fragment), "expected a message containing '\(fragment)', got: \(e.message)",
                      file: file, line: line)
        XCTAssertFalse(e.message.contains("\n"), "a one-line message: \(e.message)", file: file, line: line)
        return e
    } catch {
        XCTFail("not a HarnessError: \(error)", file: file, line: line)
        return nil
    }
    XCTFail("not refused (expected a message containing '\(fragment)')", file: file, line: line)
    return nil
}

/// Two documents equal as JSON values (numbers by value).
func assertSameJson(_ expected: ResultDocument, _ actual: ResultDocument, file: StaticString = #filePath, line: UInt = #line) {
    do {
        let diff = Json.difference(try Json.parse(expected.toText(), where: "expected"), try Json.parse(actual.toText(), where: "actual"))
        XCTAssertNil(diff, "documents differ at \(diff ?? "")", file: file, line: line)
    } catch {
        XCTFail("not JSON: \(error)", file: file, line: line)
    }
}
