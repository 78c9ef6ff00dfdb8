// Mirror of GoldenResultTest.kt: the same recipe, so the Swift core must produce the very document the Kotlin core
// wrote to tests/golden/result_kotlin.json (compared as JSON values). The Swift tests never rewrite that file (the
// Kotlin tests own it); they write what they produced to a temporary folder and print its path on a difference.
//
// The recipe (GoldenResultTest.kt):
// - platform `Android`, targets `tflite` and `executorch`; artifacts of other targets: one skipped run per
//   setting, "<target> does not run on Android";
// - `tflite`: runtime `LiteRT` version `fake-1.0`, setting `nnapi` unavailable ("NNAPI is not available on this
//   device"), precision_flags `allow_fp16` for `gpu-fp16`; `executorch`: runtime `ExecuTorch` version `fake-1.0`;
// - every inference answers the bundle's reference rows of the chunk's samples (a padded row: the chunk's first
//   sample's row);
// - the clock starts at 1e9 ns and every reading advances it by 250000 ns x (1 + (number of earlier readings mod 7));
//   one reading before and one after each timed step (load, first inference, each iteration);
// - the probe: thermal `none` before a run and `light` after it, peak memory 64.5 MB, details
//   `cpu_freq_khz_before` {cpu0: 1804800, cpu7: 2956800} and `cpu_freq_khz_after` {cpu0: 2419200, cpu7: 2803200};
// - app_parity on; harness {name "shvit-edge android harness", version "0.1.0", build "golden"}; device
//   {model "golden-fake", manufacturer "shvit-edge", os "Android", os_version "15", soc "fake", arch "arm64-v8a",
//   app_version "0.1.0", cpus 8}; created_at "2026-12-03T00:00:00+00:00"; bundle name "bundle".
import Foundation
import XCTest
@testable import HarnessCore

final class GoldenResultTests: XCTestCase {

    func produce() throws -> ResultDocument {
        let bundle = try HarnessCore.Bundle.open(Golden.bundle)
        let answer = FakeRuntime.referenceRows(bundle)
        let lite = FakeRuntime("LiteRT", "fake-1.0", unavailable: ["nnapi": "NNAPI is not available on this device"],
                               flags: ["gpu-fp16": ["allow_fp16"]], answer: answer)
        let et = FakeRuntime("ExecuTorch", "fake-1.0", answer: answer)
        let plan = try RunPlan.make(bundle, platform: "Android", targets: ["tflite", "executorch"])
        let records = Harness(bundle, ["tflite": lite, "executorch": et], clock: FakeClock(), probe: FakeProbe()).run(plan)
        return ResultDocument.of(bundle,
                                 HarnessInfo("shvit-edge android harness", "0.1.0", "golden"),
                                 DeviceInfo(model: "golden-fake", os: "Android", manufacturer: "shvit-edge", osVersion: "15",
                                            soc: "fake", arch: "arm64-v8a", appVersion: "0.1.0", cpus: 8),
                                 records, createdAt: "2026-12-03T00:00:00+00:00")
    }

    func testGoldenResult() throws {
        let doc = try produce()
        let file = Golden.dir.appendingPathComponent("result_kotlin.json")
        XCTAssertTrue(FileManager.default.fileExists(atPath: file.path),
                      "\(file.path) is missing: the Kotlin tests write it (GOLDEN_UPDATE=1 android_harness/core/run-tests.sh)")
        let expected = try Json.readFile(file, where: file.lastPathComponent, maxBytes: 64 << 20)
        let produced = try Json.parse(Data(doc.toText().utf8), where: "produced")
        let difference = Json.difference(expected, produced)
        if difference != nil {
            let mine = try Temp.dir("golden").appendingPathComponent("result_swift.json")
            try doc.write(mine)
            print("the Swift core's document: \(mine.path)")
        }
        XCTAssertNil(difference, "the produced document differs from \(file.path) at \(difference ?? "")")
        // what it holds
        XCTAssertEqual(["skipped", "ok", "ok", "ok", "ok", "skipped", "skipped", "skipped", "skipped", "skipped"],
                       doc.runs.map { $0.status })
        let bundle = try HarnessCore.Bundle.open(Golden.bundle)
        for run in doc.runs where run.status == RunRecord.OK {
            let artifact = bundle.artifacts.first { $0.sha256 == run.artifactSha256 }!
            XCTAssertEqual(try bundle.referenceOf(artifact).floats!, try run.output!.values())
            XCTAssertEqual(artifact.run.iterations, run.latenciesMs!.count)
        }
    }
}
