package dev.shvitedge.harness.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertNotNull
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Test
import java.io.File

class HarnessTest {

    private fun synthetic(vararg targets: Pair<String, List<String>>, samples: Int = 5, batch: Int = 2,
                          warmup: Int = 3, iterations: Int = 7): Bundle =
        Bundle.open(SyntheticBundle.write(File(Temp.dir(), "b"), samples = samples, batch = batch,
            targets = targets.toList(), warmup = warmup, iterations = iterations))

    @Test
    fun chunksPadTheLastChunkWithItsFirstSample() {
        val bundle = synthetic("tflite" to listOf("xnnpack"), samples = 5, batch = 2)
        val x = bundle.inputOf(bundle.artifacts[0])
        val chunks = Tensors.chunks(x, 2)
        assertEquals(3, chunks.size)
        assertEquals(listOf(0, 0, 1), chunks.map { it.padded })
        val size = x.sampleSize
        val last = chunks[2].tensor.floats!!
        // rows: sample 4, then sample 4 again (the chunk's own first sample, not sample 0)
        for (k in 0 until size) {
            assertEquals(x.floats!![4 * size + k], last[k], 0f)
            assertEquals(x.floats!![4 * size + k], last[size + k], 0f)
        }
        assertEquals(listOf(2, 3, 2, 2), chunks[2].tensor.shape)
        // assembly drops the padded row
        val outs = chunks.map { c -> FloatArray(2 * 3) { (c.index * 10 + it).toFloat() } }
        val o = Tensors.assemble(chunks, outs)
        assertEquals(listOf(5, 3), o.shape)
        assertEquals(listOf(0f, 1f, 2f, 3f, 4f, 5f, 10f, 11f, 12f, 13f, 14f, 15f, 20f, 21f, 22f), o.values.toList())
        assertEquals(3, Tensors.chunkCount(5, 2))
        assertEquals(5, Tensors.chunkCount(5, 1))
        assertEquals(1, Tensors.chunkCount(5, 8))
    }

    @Test
    fun protocolCountsCyclingAndOutputs() {
        val bundle = synthetic("tflite" to listOf("xnnpack", "gpu-fp16"), samples = 5, batch = 2, warmup = 3, iterations = 7)
        val rt = FakeRuntime("LiteRT", "9.9", flags = mapOf("gpu-fp16" to listOf("allow_fp16")))
        rt.answer = FakeRuntime.referenceRows(bundle)
        val phases = ArrayList<String>()
        val clock = FakeClock()
        val records = Harness(bundle, mapOf("tflite" to rt), clock, FakeProbe(),
            progress = { _, s, phase, _, _ -> phases.add("$s:$phase") })
            .run(RunPlan.make(bundle, "Android", setOf("tflite")))
        assertEquals(2, records.size)
        assertEquals(2, rt.loads)
        assertEquals(2, rt.closes)
        assertEquals(listOf("load m.tflite xnnpack 4", "load m.tflite gpu-fp16 4"), rt.calls)
        // per run: first inference on chunk 0, warmup 3 on i mod 3, iterations 7 on i mod 3, then one pass 0..2
        val perRun = listOf(0) + listOf(0, 1, 2) + listOf(0, 1, 2, 0, 1, 2, 0) + listOf(0, 1, 2)
        assertEquals(perRun + perRun, rt.chunkCalls)
        val r = records[0]
        assertEquals(RunRecord.OK, r.status)
        assertNull(r.error)
        assertTrue("error is written as null", "error" in r.explicitNulls)
        assertEquals(7, r.latenciesMs!!.size)
        assertEquals(3, r.warmup)
        assertEquals(4, r.threads)
        assertEquals("in-app wall time", r.meaning)
        assertEquals("none", r.thermalBefore)
        assertEquals("light", r.thermalAfter)
        assertEquals(64.5, r.peakMemoryMb!!, 0.0)
        assertNotNull(r.loadMs)
        assertNotNull(r.firstInferenceMs)
        assertNull(r.compileMs)
        assertTrue(r.latenciesMs!!.all { it > 0 && it * 4 == Math.floor(it * 4) })
        assertEquals(listOf(5, 3), r.output!!.shape)
        val ref = bundle.referenceOf(bundle.artifacts[0]).floats!!
        assertTrue("padding rows dropped, rows in order", ref.contentEquals(r.output!!.values()))
        assertEquals(true, r.appParity!!["pass"])
        assertEquals(1.0, r.appParity!!["cosine"] as Double, 1e-12)
        assertNull(r.appParity!!["sqnr_db"])
        assertEquals(listOf("allow_fp16"), records[1].precisionFlags)
        assertNull(records[0].precisionFlags)
        assertTrue(r.details!!.containsKey("cpu_freq_khz_before") && r.details!!.containsKey("cpu_freq_khz_after"))
        assertEquals(listOf("xnnpack:load", "xnnpack:first"), phases.take(2))
        assertTrue(phases.contains("xnnpack:ok"))
        // the document validates
        val doc = ResultDocument.of(bundle, HarnessInfo("t", "1"), DeviceInfo("m", "Android"), records)
        assertSameJson(doc, ResultDocument.parse(doc.toText().toByteArray(), "doc"))
    }

    @Test
    fun compileIsTimedOnItsOwn() {
        val bundle = synthetic("coreml" to listOf("cpu_only"), samples = 2, batch = 1)
        val rt = FakeRuntime("Core ML", "8", compiles = true)
        rt.answer = FakeRuntime.referenceRows(bundle)
        val r = Harness(bundle, mapOf("coreml" to rt), FakeClock(), FakeProbe())
            .run(RunPlan.make(bundle, "iOS", setOf("coreml"))).single()
        assertEquals(1, rt.compilesDone)
        assertNotNull(r.compileMs)
        assertNotNull(r.loadMs)
        assertEquals(RunRecord.OK, r.status)
    }

    @Test
    fun skippedForUnavailableSettingsAndOtherPlatformsTargets() {
        val bundle = synthetic("tflite" to listOf("xnnpack", "nnapi"), "coreml" to listOf("cpu_only", "all"),
            "executorch" to listOf("xnnpack"))
        val lite = FakeRuntime("LiteRT", "1", unavailable = mapOf("nnapi" to "NNAPI is not available on this device"))
        lite.answer = FakeRuntime.referenceRows(bundle)
        val records = Harness(bundle, mapOf("tflite" to lite), FakeClock(), FakeProbe())
            .run(RunPlan.make(bundle, "Android", setOf("tflite", "executorch")))
        assertEquals(listOf("xnnpack", "nnapi", "cpu_only", "all", "xnnpack"), records.map { it.setting })
        assertEquals(listOf("ok", "skipped", "skipped", "skipped", "skipped"), records.map { it.status })
        assertEquals("NNAPI is not available on this device", records[1].error)
        assertEquals("coreml does not run on Android", records[2].error)
        assertEquals("Core ML", records[2].runtime)
        assertEquals("executorch does not run here", records[4].error)
        assertEquals(1, lite.loads)
        for (r in records.drop(1)) {
            assertNull(r.output)
            assertNull(r.latenciesMs)
            assertNull(r.loadMs)
        }
    }

    @Test
    fun failuresKeepMeasuredFieldsAndNeverDropARun() {
        val bundle = synthetic("tflite" to listOf("xnnpack", "gpu", "gpu-fp16"), samples = 3, batch = 1, warmup = 2, iterations = 4)
        // fail at the 6th inference: first (0), warmup (1, 2), iterations (3, 4), then 5 throws
        val rt = FakeRuntime("LiteRT", "1", failAt = 5)
        rt.answer = FakeRuntime.referenceRows(bundle)
        val plan = RunPlan.make(bundle, "Android", setOf("tflite"))
        val h = Harness(bundle, mapOf("tflite" to rt), FakeClock(), FakeProbe())
        val first = h.run(RunPlan(plan.runs.take(1)))[0]
        assertEquals(RunRecord.FAILED, first.status)
        assertEquals("RuntimeException: inference 5 failed", first.error)
        assertNotNull(first.loadMs)
        assertNotNull(first.firstInferenceMs)
        assertEquals(2, first.latenciesMs!!.size)
        assertNull(first.output)
        assertEquals("none", first.thermalBefore)
        assertEquals(1, rt.closes)
        // a load failure: no load_ms, no latencies
        rt.failAt = -1
        val second = h.run(RunPlan(plan.runs.drop(1).take(1)))[0]
        assertEquals(RunRecord.FAILED, second.status)
        assertEquals("IllegalStateException: cannot load m.tflite", second.error)
        assertNull(second.loadMs)
        assertNull(second.latenciesMs)
        // an output of the wrong size fails the run, it does not crash the harness
        rt.failAt = null
        rt.answer = { _, c -> FloatArray(if (c.index == 1) 5 else 3) }
        val third = h.run(RunPlan(plan.runs.drop(2)))[0]
        assertEquals(RunRecord.FAILED, third.status)
        assertTrue(third.error!!, third.error!!.contains("chunk 1"))
        val doc = ResultDocument.of(bundle, HarnessInfo("t", "1"), DeviceInfo("m", "Android"), listOf(first, second, third))
        assertSameJson(doc, ResultDocument.parse(doc.toText().toByteArray(), "doc"))
    }

    @Test
    fun stoppingRecordsTheRestAsNotRun() {
        val bundle = synthetic("tflite" to listOf("xnnpack", "gpu"), samples = 2, batch = 1, warmup = 1, iterations = 50)
        val rt = FakeRuntime("LiteRT", "1")
        var count = 0
        rt.answer = { a, c -> count++; FakeRuntime.referenceRows(bundle)(a, c) }
        val records = Harness(bundle, mapOf("tflite" to rt), FakeClock(), FakeProbe(), shouldStop = { count > 10 })
            .run(RunPlan.make(bundle, "Android", setOf("tflite")))
        assertEquals(2, records.size)
        assertEquals(RunRecord.FAILED, records[0].status)
        assertTrue(records[0].error!!.contains("stopped by the user"))
        assertEquals(RunRecord.FAILED, records[1].status)
        assertTrue(records[1].error!!.startsWith("not run"))
        assertEquals(1, rt.loads)
    }

    @Test
    fun planOverridesCooldownAndOnly() {
        val bundle = synthetic("tflite" to listOf("xnnpack", "gpu"), "executorch" to listOf("xnnpack"), samples = 2, batch = 1)
        val plan = RunPlan.make(bundle, "Android", setOf("tflite", "executorch"), warmup = 0, iterations = 2, threads = 2,
            only = setOf("m.tflite"), cooldownSeconds = 1.5)
        assertEquals(2, plan.size)
        assertTrue(plan.runs.all { it.warmup == 0 && it.iterations == 2 && it.threads == 2 && it.skip == null })
        val rt = FakeRuntime("LiteRT", "1")
        rt.answer = FakeRuntime.referenceRows(bundle)
        val clock = FakeClock()
        val records = Harness(bundle, mapOf("tflite" to rt), clock, FakeProbe()).run(plan)
        assertEquals(listOf(1500L), clock.sleeps)
        assertTrue(records.all { it.status == RunRecord.OK && it.latenciesMs!!.size == 2 && it.threads == 2 })
        assertEquals(listOf("load m.tflite xnnpack 2", "load m.tflite gpu 2"), rt.calls)
        assertRefused("nope: not in the bundle") { RunPlan.make(bundle, "Android", emptySet(), only = setOf("nope")) }
        assertFalse(RunPlan.make(bundle, "Android", emptySet()).runs.any { it.skip == null })
    }
}
