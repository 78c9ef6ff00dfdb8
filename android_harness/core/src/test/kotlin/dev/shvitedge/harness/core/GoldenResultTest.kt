package dev.shvitedge.harness.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Test
import java.io.File

/**
 * The golden RESULT: the Harness on tests/golden/bundle with fake runtimes, a fake clock and fixed facts, written
 * with ResultDocument. It must equal (as a JSON value) tests/golden/result_kotlin.json, which the Python tests
 * ingest with the golden bundle; `-Dgolden.update=1` (GOLDEN_UPDATE=1 run-tests.sh) rewrites it instead.
 *
 * The recipe (the Swift mirror follows it to produce the same document):
 * - platform `Android`, targets `tflite` and `executorch`; artifacts of other targets: one skipped run per
 *   setting, "<target> does not run on Android";
 * - `tflite`: runtime `LiteRT` version `fake-1.0`, setting `nnapi` unavailable ("NNAPI is not available on this
 *   device"), precision_flags `allow_fp16` for `gpu-fp16`; `executorch`: runtime `ExecuTorch` version `fake-1.0`;
 * - every inference answers the bundle's reference rows of the chunk's samples (a padded row: the chunk's first
 *   sample's row);
 * - the clock starts at 1e9 ns and every reading advances it by 250000 ns x (1 + (number of earlier readings mod 7));
 *   one reading before and one after each timed step (load, first inference, each iteration);
 * - the probe: thermal `none` before a run and `light` after it, peak memory 64.5 MB, details
 *   `cpu_freq_khz_before` {cpu0: 1804800, cpu7: 2956800} and `cpu_freq_khz_after` {cpu0: 2419200, cpu7: 2803200};
 * - app_parity on: {cosine, max_abs, top1_agreement, sqnr_db (null: infinite), pass, problems}, the sums of
 *   Parity.compare taken in float64 in index order (cosine = dot / (sqrt(|out|^2) * sqrt(|ref|^2)); 1.0 for
 *   these arrays, though equal arrays can give 1.0000000000000002 in that order);
 * - harness {name "shvit-edge android harness", version "0.1.0", build "golden"}; device
 *   {model "golden-fake", manufacturer "shvit-edge", os "Android", os_version "15", soc "fake", arch "arm64-v8a",
 *   app_version "0.1.0", cpus 8}; created_at "2026-12-03T00:00:00+00:00"; bundle name "bundle".
 */
class GoldenResultTest {

    fun produce(): ResultDocument {
        val bundle = Bundle.open(Golden.bundle)
        val answer = FakeRuntime.referenceRows(bundle)
        val lite = FakeRuntime("LiteRT", "fake-1.0", unavailable = mapOf("nnapi" to "NNAPI is not available on this device"),
            flags = mapOf("gpu-fp16" to listOf("allow_fp16")), answer = answer)
        val et = FakeRuntime("ExecuTorch", "fake-1.0", answer = answer)
        val plan = RunPlan.make(bundle, "Android", setOf("tflite", "executorch"))
        val records = Harness(bundle, mapOf("tflite" to lite, "executorch" to et), FakeClock(), FakeProbe()).run(plan)
        return ResultDocument.of(bundle,
            HarnessInfo("shvit-edge android harness", "0.1.0", "golden"),
            DeviceInfo(model = "golden-fake", os = "Android", manufacturer = "shvit-edge", osVersion = "15", soc = "fake",
                arch = "arm64-v8a", appVersion = "0.1.0", cpus = 8),
            records, createdAt = "2026-12-03T00:00:00+00:00")
    }

    @Test
    fun goldenResult() {
        val doc = produce()
        val file = File(Golden.dir, "result_kotlin.json")
        if (Golden.update) {
            doc.write(file)
            println("wrote $file")
        }
        assertTrue("$file is missing: run with GOLDEN_UPDATE=1 once", file.isFile)
        val expected = Json.readFile(file, file.name, 64L shl 20)
        val produced = Json.parse(doc.toText().toByteArray(), "produced")
        assertNull("the produced document differs from $file at ${Json.difference(expected, produced)}",
            Json.difference(expected, produced))
        // what it holds
        assertEquals(listOf("skipped", "ok", "ok", "ok", "ok", "skipped", "skipped", "skipped", "skipped", "skipped"),
            doc.runs.map { it.status })
        val bundle = Bundle.open(Golden.bundle)
        for (run in doc.runs.filter { it.status == RunRecord.OK }) {
            val artifact = bundle.artifacts.single { it.sha256 == run.artifactSha256 }
            assertTrue(bundle.referenceOf(artifact).floats!!.contentEquals(run.output!!.values()))
            assertEquals(artifact.run.iterations, run.latenciesMs!!.size)
        }
    }
}
