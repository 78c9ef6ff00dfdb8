// Mirror of HarnessTest.kt.
import Foundation
import XCTest
@testable import HarnessCore

final class HarnessTests: XCTestCase {

    private func synthetic(_ targets: (String, [String])..., samples: Int = 5, batch: Int = 2,
                           warmup: Int = 3, iterations: Int = 7) throws -> HarnessCore.Bundle {
        try HarnessCore.Bundle.open(SyntheticBundle.write(try Temp.dir().appendingPathComponent("b"), samples: samples,
                                                          batch: batch, targets: targets, warmup: warmup,
                                                          iterations: iterations))
    }

    func testChunksPadTheLastChunkWithItsFirstSample() throws {
        let bundle = try synthetic(("tflite", ["xnnpack"]), samples: 5, batch: 2)
        let x = try bundle.inputOf(bundle.artifacts[0])
        let chunks = Tensors.chunks(x, 2)
        XCTAssertEqual(3, chunks.count)
        XCTAssertEqual([0, 0, 1], chunks.map { $0.padded })
        let size = x.sampleSize
        let last = chunks[2].tensor.floats!
        // rows: sample 4, then sample 4 again (the chunk's own first sample, not sample 0)
        for k in 0..<size {
            XCTAssertEqual(x.floats![4 * size + k], last[k])
            XCTAssertEqual(x.floats![4 * size + k], last[size + k])
        }
        XCTAssertEqual([2, 3, 2, 2], chunks[2].tensor.shape)
        // assembly drops the padded row
        let outs = chunks.map { c in (0..<(2 * 3)).map { Float(c.index * 10 + $0) } }
        let o = try Tensors.assemble(chunks, outs)
        XCTAssertEqual([5, 3], o.shape)
        XCTAssertEqual([0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15, 20, 21, 22], o.values)
        XCTAssertEqual(3, Tensors.chunkCount(5, 2))
        XCTAssertEqual(5, Tensors.chunkCount(5, 1))
        XCTAssertEqual(1, Tensors.chunkCount(5, 8))
    }

    func testProtocolCountsCyclingAndOutputs() throws {
        let bundle = try synthetic(("tflite", ["xnnpack", "gpu-fp16"]), samples: 5, batch: 2, warmup: 3, iterations: 7)
        let rt = FakeRuntime("LiteRT", "9.9", flags: ["gpu-fp16": ["allow_fp16"]])
        rt.answer = FakeRuntime.referenceRows(bundle)
        var phases: [String] = []
        let clock = FakeClock()
        let records = Harness(bundle, ["tflite": rt], clock: clock, probe: FakeProbe(),
                              progress: { _, s, phase, _, _ in phases.append("\(s):\(phase)") })
            .run(try RunPlan.make(bundle, platform: "Android", targets: ["tflite"]))
        XCTAssertEqual(2, records.count)
        XCTAssertEqual(2, rt.loads)
        XCTAssertEqual(2, rt.closes)
        XCTAssertEqual(["load m.tflite xnnpack 4", "load m.tflite gpu-fp16 4"], rt.calls)
        // per run: first inference on chunk 0, warmup 3 on i mod 3, iterations 7 on i mod 3, then one pass 0..2
        let perRun = [0] + [0, 1, 2] + [0, 1, 2, 0, 1, 2, 0] + [0, 1, 2]
        XCTAssertEqual(perRun + perRun, rt.chunkCalls)
        let r = records[0]
        XCTAssertEqual(RunRecord.OK, r.status)
        XCTAssertNil(r.error)
        XCTAssertTrue(r.explicitNulls.contains("error"), "error is written as null")
        XCTAssertEqual(7, r.latenciesMs!.count)
        XCTAssertEqual(3, r.warmup)
        XCTAssertEqual(4, r.threads)
        XCTAssertEqual("in-app wall time", r.meaning)
        XCTAssertEqual("none", r.thermalBefore)
        XCTAssertEqual("light", r.thermalAfter)
        XCTAssertEqual(64.5, r.peakMemoryMb!)
        XCTAssertNotNil(r.loadMs)
        XCTAssertNotNil(r.firstInferenceMs)
        XCTAssertNil(r.compileMs)
        XCTAssertTrue(r.latenciesMs!.allSatisfy { $0 > 0 && $0 * 4 == ($0 * 4).rounded(.down) })
        XCTAssertEqual([5, 3], r.output!.shape)
        let ref = try bundle.referenceOf(bundle.artifacts[0]).floats!
        XCTAssertEqual(ref, try r.output!.values(), "padding rows dropped, rows in order")
        XCTAssertEqual(JsonValue.bool(true), r.appParity!["pass"])
        XCTAssertEqual(1.0, r.appParity!["cosine"]!.number!, accuracy: 1e-12)
        XCTAssertEqual(JsonValue.null, r.appParity!["sqnr_db"])
        XCTAssertEqual(["allow_fp16"], records[1].precisionFlags)
        XCTAssertNil(records[0].precisionFlags)
        XCTAssertTrue(r.details!.containsKey("cpu_freq_khz_before") && r.details!.containsKey("cpu_freq_khz_after"))
        XCTAssertEqual(["xnnpack:load", "xnnpack:first"], Array(phases.prefix(2)))
        XCTAssertTrue(phases.contains("xnnpack:ok"))
        // the document validates
        let doc = ResultDocument.of(bundle, HarnessInfo("t", "1"), DeviceInfo(model: "m", os: "Android"), records)
        assertSameJson(doc, try ResultDocument.parse(Data(doc.toText().utf8), where: "doc"))
    }

    func testCompileIsTimedOnItsOwn() throws {
        let bundle = try synthetic(("coreml", ["cpu_only"]), samples: 2, batch: 1)
        let rt = FakeRuntime("Core ML", "8", compiles: true)
        rt.answer = FakeRuntime.referenceRows(bundle)
        let records = Harness(bundle, ["coreml": rt], clock: FakeClock(), probe: FakeProbe())
            .run(try RunPlan.make(bundle, platform: "iOS", targets: ["coreml"]))
        XCTAssertEqual(1, records.count)
        let r = records[0]
        XCTAssertEqual(1, rt.compilesDone)
        XCTAssertNotNil(r.compileMs)
        XCTAssertNotNil(r.loadMs)
        XCTAssertEqual(RunRecord.OK, r.status)
    }

    func testSkippedForUnavailableSettingsAndOtherPlatformsTargets() throws {
        let bundle = try synthetic(("tflite", ["xnnpack", "nnapi"]), ("coreml", ["cpu_only", "all"]), ("executorch", ["xnnpack"]))
        let lite = FakeRuntime("LiteRT", "1", unavailable: ["nnapi": "NNAPI is not available on this device"])
        lite.answer = FakeRuntime.referenceRows(bundle)
        let records = Harness(bundle, ["tflite": lite], clock: FakeClock(), probe: FakeProbe())
            .run(try RunPlan.make(bundle, platform: "Android", targets: ["tflite", "executorch"]))
        XCTAssertEqual(["xnnpack", "nnapi", "cpu_only", "all", "xnnpack"], records.map { $0.setting })
        XCTAssertEqual(["ok", "skipped", "skipped", "skipped", "skipped"], records.map { $0.status })
        XCTAssertEqual("NNAPI is not available on this device", records[1].error)
        XCTAssertEqual("coreml does not run on Android", records[2].error)
        XCTAssertEqual("Core ML", records[2].runtime)
        XCTAssertEqual("executorch does not run here", records[4].error)
        XCTAssertEqual(1, lite.loads)
        for r in records.dropFirst() {
            XCTAssertNil(r.output)
            XCTAssertNil(r.latenciesMs)
            XCTAssertNil(r.loadMs)
        }
    }

    func testFailuresKeepMeasuredFieldsAndNeverDropARun() throws {
        let bundle = try synthetic(("tflite", ["xnnpack", "gpu", "gpu-fp16"]), samples: 3, batch: 1, warmup: 2, iterations: 4)
        // fail at the 6th inference: first (0), warmup (1, 2), iterations (3, 4), then 5 throws
        let rt = FakeRuntime("LiteRT", "1", failAt: 5)
        rt.answer = FakeRuntime.referenceRows(bundle)
        let plan = try RunPlan.make(bundle, platform: "Android", targets: ["tflite"])
        let h = Harness(bundle, ["tflite": rt], clock: FakeClock(), probe: FakeProbe())
        let first = h.run(RunPlan(Array(plan.runs.prefix(1))))[0]
        XCTAssertEqual(RunRecord.FAILED, first.status)
        XCTAssertEqual("RuntimeException: inference 5 failed", first.error)
        XCTAssertNotNil(first.loadMs)
        XCTAssertNotNil(first.firstInferenceMs)
        XCTAssertEqual(2, first.latenciesMs!.count)
        XCTAssertNil(first.output)
        XCTAssertEqual("none", first.thermalBefore)
        XCTAssertEqual(1, rt.closes)
        // a load failure: no load_ms, no latencies
        rt.failAt = -1
        let second = h.run(RunPlan(Array(plan.runs.dropFirst().prefix(1))))[0]
        XCTAssertEqual(RunRecord.FAILED, second.status)
        XCTAssertEqual("IllegalStateException: cannot load m.tflite", second.error)
        XCTAssertNil(second.loadMs)
        XCTAssertNil(second.latenciesMs)
        // an output of the wrong size fails the run, it does not crash the harness
        rt.failAt = nil
        rt.answer = { _, c in [Float](repeating: 0, count: c.index == 1 ? 5 : 3) }
        let third = h.run(RunPlan(Array(plan.runs.dropFirst(2))))[0]
        XCTAssertEqual(RunRecord.FAILED, third.status)
        XCTAssertTrue(third.error!.contains("chunk 1"), third.error!)
        let doc = ResultDocument.of(bundle, HarnessInfo("t", "1"), DeviceInfo(model: "m", os: "Android"), [first, second, third])
        assertSameJson(doc, try ResultDocument.parse(Data(doc.toText().utf8), where: "doc"))
    }

    func testStoppingRecordsTheRestAsNotRun() throws {
        let bundle = try synthetic(("tflite", ["xnnpack", "gpu"]), samples: 2, batch: 1, warmup: 1, iterations: 50)
        let rt = FakeRuntime("LiteRT", "1")
        var count = 0
        let rows = FakeRuntime.referenceRows(bundle)
        rt.answer = { a, c in
            count += 1
            return try rows(a, c)
        }
        let records = Harness(bundle, ["tflite": rt], clock: FakeClock(), probe: FakeProbe(), shouldStop: { count > 10 })
            .run(try RunPlan.make(bundle, platform: "Android", targets: ["tflite"]))
        XCTAssertEqual(2, records.count)
        XCTAssertEqual(RunRecord.FAILED, records[0].status)
        XCTAssertTrue(records[0].error!.contains("stopped by the user"))
        XCTAssertEqual(RunRecord.FAILED, records[1].status)
        XCTAssertTrue(records[1].error!.hasPrefix("not run"))
        XCTAssertEqual(1, rt.loads)
    }

    func testPlanOverridesCooldownAndOnly() throws {
        let bundle = try synthetic(("tflite", ["xnnpack", "gpu"]), ("executorch", ["xnnpack"]), samples: 2, batch: 1)
        let plan = try RunPlan.make(bundle, platform: "Android", targets: ["tflite", "executorch"], warmup: 0, iterations: 2,
                                    threads: 2, only: ["m.tflite"], cooldownSeconds: 1.5)
        XCTAssertEqual(2, plan.size)
        XCTAssertTrue(plan.runs.allSatisfy { $0.warmup == 0 && $0.iterations == 2 && $0.threads == 2 && $0.skip == nil })
        let rt = FakeRuntime("LiteRT", "1")
        rt.answer = FakeRuntime.referenceRows(bundle)
        let clock = FakeClock()
        let records = Harness(bundle, ["tflite": rt], clock: clock, probe: FakeProbe()).run(plan)
        XCTAssertEqual([1500], clock.sleeps)
        XCTAssertTrue(records.allSatisfy { $0.status == RunRecord.OK && $0.latenciesMs!.count == 2 && $0.threads == 2 })
        XCTAssertEqual(["load m.tflite xnnpack 2", "load m.tflite gpu 2"], rt.calls)
        assertRefused("nope: not in the bundle") { _ = try RunPlan.make(bundle, platform: "Android", targets: [], only: ["nope"]) }
        XCTAssertFalse(try RunPlan.make(bundle, platform: "Android", targets: []).runs.contains { $0.skip == nil })
    }
}
