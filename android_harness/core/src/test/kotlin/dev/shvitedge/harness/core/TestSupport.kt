package dev.shvitedge.harness.core

import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.file.Files

/** Where the golden vectors are (system property golden.dir, set by run-tests.sh). */
object Golden {
    val dir: File by lazy {
        val path = System.getProperty("golden.dir") ?: "../../tests/golden"
        File(path).absoluteFile.also { check(it.isDirectory) { "no golden vectors at $it (set -Dgolden.dir)" } }
    }
    val bundle: File get() = File(dir, "bundle")
    val update: Boolean get() = System.getProperty("golden.update") == "1"

    fun json(name: String): Any? = Json.readFile(File(dir, name), name, 64L shl 20)
}

object Temp {
    fun dir(prefix: String = "core-test"): File = Files.createTempDirectory(prefix).toFile().also { it.deleteOnExit() }

    fun copyTree(from: File, to: File) {
        from.walkTopDown().forEach { f ->
            val target = File(to, f.relativeTo(from).path)
            if (f.isDirectory) target.mkdirs() else f.copyTo(target, overwrite = true)
        }
    }
}

/** Little-endian float32 values of a file, read independently of the core (ByteBuffer). */
fun floatsOf(file: File): FloatArray {
    val buffer = ByteBuffer.wrap(file.readBytes()).order(ByteOrder.LITTLE_ENDIAN)
    return FloatArray(buffer.remaining() / 4) { buffer.getFloat(it * 4) }
}

/** A clock that moves by a known step on every reading: latencies are multiples of 0.25 ms. */
class FakeClock(var now: Long = 1_000_000_000L) : Clock {
    var calls = 0
    val sleeps = ArrayList<Long>()
    override fun nanoTime(): Long {
        val t = now
        now += 250_000L * (1 + calls % 7)
        calls++
        return t
    }

    override fun sleepMillis(millis: Long) { sleeps.add(millis) }
}

/** thermal: `none` before a run, `light` after it; a fixed peak memory; CPU frequencies as the app records them. */
class FakeProbe : DeviceProbe {
    private var thermalCalls = 0
    override fun thermal(): String = if (thermalCalls++ % 2 == 0) "none" else "light"
    override fun peakMemoryMb(): Double = 64.5
    override fun details(phase: String): Map<String, Any?> =
        mapOf("cpu_freq_khz_$phase" to linkedMapOf("cpu0" to (if (phase == "before") 1804800 else 2419200),
            "cpu7" to (if (phase == "before") 2956800 else 2803200)))
}

/**
 * A runtime that answers each chunk with rows from [answer] (by default the bundle's reference rows of the chunk's
 * samples, padded rows repeating the chunk's first sample) and records every call.
 */
class FakeRuntime(
    override val name: String,
    override val version: String?,
    val unavailable: Map<String, String> = emptyMap(),
    val flags: Map<String, List<String>> = emptyMap(),
    var answer: ((Artifact, Chunk) -> FloatArray)? = null,
    /** throw at this call of Session.run (0 = the first inference), or at load when -1 */
    var failAt: Int? = null,
    override val compiles: Boolean = false,
) : Runtime {
    val calls = ArrayList<String>()
    val chunkCalls = ArrayList<Int>()
    var loads = 0
    var compilesDone = 0
    var closes = 0

    override fun isAvailable(setting: String): String? = unavailable[setting]
    override fun precisionFlags(setting: String): List<String> = flags[setting] ?: emptyList()
    override fun compile(artifact: Artifact, setting: String) { compilesDone++ }

    override fun load(artifact: Artifact, setting: String, threads: Int): Session {
        loads++
        calls.add("load ${artifact.name} $setting $threads")
        if (failAt == -1) throw IllegalStateException("cannot load ${artifact.name}")
        var k = 0
        return object : Session {
            override fun run(chunkIndex: Int, input: Chunk): FloatArray {
                if (failAt == k) throw RuntimeException("inference $k failed")
                k++
                chunkCalls.add(chunkIndex)
                check(input.index == chunkIndex)
                return (answer ?: error("no answer"))(artifact, input)
            }

            override fun close() { closes++ }
        }
    }

    companion object {
        /** The reference rows of [chunk]'s samples, padded rows repeating its first sample's row. */
        fun referenceRows(bundle: Bundle): (Artifact, Chunk) -> FloatArray = { a, chunk ->
            val ref = bundle.referenceOf(a)
            val classes = ref.shape[1]
            val out = FloatArray(chunk.batch * classes)
            for (row in 0 until chunk.batch) {
                val sample = if (row < chunk.realRows) chunk.start + row else chunk.start
                System.arraycopy(ref.floats!!, sample * classes, out, row * classes, classes)
            }
            out
        }
    }
}

/**
 * A synthetic bundle written by the test (not by Python): [samples] float32 NCHW inputs of 2x2 pixels, references
 * of [classes] values per sample, one artifact per target of [targets] with the given [batch] and settings.
 */
object SyntheticBundle {
    fun write(
        root: File,
        samples: Int = 5,
        batch: Int = 2,
        classes: Int = 3,
        targets: List<Pair<String, List<String>>> = listOf("tflite" to listOf("xnnpack", "gpu")),
        warmup: Int = 3,
        iterations: Int = 7,
        threads: Int = 4,
    ): File {
        root.mkdirs()
        File(root, "tensors").mkdirs()
        File(root, "artifacts").mkdirs()
        val h = 2
        val w = 2
        val x = FloatArray(samples * 3 * h * w) { it * 0.5f - 3f }
        val ref = FloatArray(samples * classes) { (it % classes) + (it / classes) * 10f }
        File(root, "tensors/input-x.f32").writeBytes(Tensors.floatsToBytes(x))
        File(root, "tensors/reference-r.f32").writeBytes(Tensors.floatsToBytes(ref))
        val artifacts = ArrayList<Any?>()
        for ((target, settings) in targets) {
            val name = "m.$target"
            val bytes = "model for $target".toByteArray()
            File(root, "artifacts/$name").writeBytes(bytes)
            val sha = Sha256.hex(bytes)
            val manifest = linkedMapOf<String, Any?>("schema_version" to 2, "target" to target, "variant" to "v",
                "resolution" to listOf(h, w), "batch" to batch,
                "inputs" to listOf(mapOf("name" to "image", "shape" to listOf(batch, 3, h, w), "dtype" to "float32", "layout" to "NCHW")),
                "artifact" to mapOf("file" to name, "sha256" to sha))
            File(root, "artifacts/$name.json").writeText(Json.write(manifest, 1))
            artifacts.add(linkedMapOf<String, Any?>("name" to name, "file" to "artifacts/$name",
                "manifest" to "artifacts/$name.json", "sha256" to sha, "target" to target, "family" to "f",
                "variant" to "v", "resolution" to listOf(h, w), "batch" to batch, "precision" to "fp32",
                "quantization" to null,
                "input" to mapOf("tensor" to "input-x", "name" to "image", "kind" to "tensor"),
                "output" to mapOf("name" to "logits", "layout" to "NC", "reference" to "reference-r"),
                "tolerance" to mapOf("class" to "fp32", "cosine" to 0.99999, "max_abs" to 0.001, "top1_agreement" to 1.0, "sqnr_db" to null),
                "run" to mapOf("warmup" to warmup, "iterations" to iterations, "threads" to threads, "settings" to settings)))
        }
        writeIndex(root, artifacts, listOf(samples, 3, h, w), listOf(samples, classes))
        return root
    }

    /** (Re)write bundle.json with `files` telling the truth about every file under [root]. */
    fun writeIndex(root: File, artifacts: List<Any?>, xShape: List<Int>, refShape: List<Int>) {
        val files = root.walkTopDown().filter { it.isFile && it.name != "bundle.json" }
            .map { it.relativeTo(root).invariantSeparatorsPath }.sorted()
            .map { mapOf("path" to it, "sha256" to Sha256.ofFile(File(root, it)), "size" to File(root, it).length()) }.toList()
        val doc = linkedMapOf<String, Any?>("schema_version" to 1, "kind" to "shvit-edge-bundle", "id" to "0".repeat(64),
            "shvit_edge_version" to "test", "created_at" to "2026-01-01T00:00:00+00:00",
            "inputs" to mapOf("images" to emptyList<String>(), "samples" to xShape[0], "seed" to 0),
            "tensors" to linkedMapOf(
                "input-x" to mapOf("file" to "tensors/input-x.f32", "dtype" to "float32", "shape" to xShape, "layout" to "NCHW", "role" to "input"),
                "reference-r" to mapOf("file" to "tensors/reference-r.f32", "dtype" to "float32", "shape" to refShape, "layout" to "NC", "role" to "reference")),
            "artifacts" to artifacts, "files" to files)
        File(root, "bundle.json").writeText(Json.write(doc, 1))
    }

    /** Edit bundle.json's parsed value with [edit] and write it back (files unchanged). */
    @Suppress("UNCHECKED_CAST")
    fun edit(root: File, edit: (MutableMap<String, Any?>) -> Unit) {
        val doc = deepCopy(Json.readFile(File(root, "bundle.json"), "bundle.json")) as MutableMap<String, Any?>
        edit(doc)
        File(root, "bundle.json").writeText(Json.write(doc, 1))
    }

    fun deepCopy(v: Any?): Any? = when (v) {
        is Map<*, *> -> LinkedHashMap<String, Any?>().also { m -> v.forEach { (k, x) -> m[k as String] = deepCopy(x) } }
        is List<*> -> ArrayList<Any?>().also { l -> v.forEach { l.add(deepCopy(it)) } }
        else -> v
    }
}

fun assertRefused(fragment: String, block: () -> Unit): HarnessError {
    try {
        block()
    } catch (e: HarnessError) {
        org.junit.Assert.assertTrue("expected a message containing '$fragment', got: ${e.message}", e.message.contains(fragment))
        org.junit.Assert.assertFalse("a one-line message: ${e.message}", e.message.contains('\n'))
        return e
    }
    throw AssertionError("not refused (expected a message containing '$fragment')")
}

/** Two documents equal as JSON values (numbers by value: an Int detail equals its Long read back). */
fun assertSameJson(expected: ResultDocument, actual: ResultDocument) {
    val diff = Json.difference(Json.parse(expected.toText(), "expected"), Json.parse(actual.toText(), "actual"))
    org.junit.Assert.assertNull("documents differ at $diff", diff)
}
