package dev.shvitedge.harness.core

/** A runtime the app links (LiteRT, ExecuTorch, Core ML): loads an artifact under one setting. */
interface Runtime {
    /** e.g. `LiteRT`, `ExecuTorch`, `Core ML` (a run's `runtime`) */
    val name: String

    /** the runtime's version (a run's `runtime_version`), or null when unknown */
    val version: String?

    /** Why [setting] cannot run on this device (the run is recorded as skipped with it), or null when it can. */
    fun isAvailable(setting: String): String?

    /** Whether [compile] does something: it is then timed on its own as `compile_ms` (Core ML). */
    val compiles: Boolean get() = false

    /** Compile the artifact for [setting] before [load] (Core ML's `MLModel.compileModel(at:)`). */
    fun compile(artifact: Artifact, setting: String) {}

    /** Load [artifact] (its file: [Artifact.path]) under [setting] with [threads] CPU threads: timed as `load_ms`. */
    fun load(artifact: Artifact, setting: String, threads: Int): Session

    /** What [setting] lets the runtime do to precision (a run's `precision_flags`), e.g. `allow_fp16`. */
    fun precisionFlags(setting: String): List<String> = emptyList()
}

/** A loaded artifact. */
interface Session : AutoCloseable {
    /**
     * One inference on [input] (chunk [chunkIndex] of the input tensor, `batch` samples): the output rows,
     * `batch * classes` float32 values in row order (float16 outputs converted, a classifier's probabilities in
     * class order).
     */
    fun run(chunkIndex: Int, input: Chunk): FloatArray

    /**
     * Called once after the timed load, untimed, with every chunk the run will feed: convert them to the runtime's
     * own input buffers here, so that [run] times the inference and not the conversion.
     */
    fun prepare(chunks: List<Chunk>) {}

    /** What the runtime observed, for the run's `details` (e.g. the delegate actually applied), or null. */
    fun details(): Map<String, Any?>? = null

    override fun close()
}

/** A monotonic clock (System.nanoTime; tests use a fake one) and a way to wait. */
interface Clock {
    fun nanoTime(): Long
    fun sleepMillis(millis: Long)

    object System : Clock {
        override fun nanoTime(): Long = java.lang.System.nanoTime()
        override fun sleepMillis(millis: Long) = Thread.sleep(millis)
    }
}

/** What the device says about itself around a run. */
interface DeviceProbe {
    /** The thermal state (`none`/`light`/... on Android, `nominal`/`fair`/... on iOS), or null when unknown. */
    fun thermal(): String?

    /** The process's peak memory in MB so far (or the best measure the platform gives), or null. */
    fun peakMemoryMb(): Double?

    /** Called once before the run is loaded: e.g. reset the peak-memory mark. */
    fun beforeRun() {}

    /** Facts for the run's `details` at [phase] (`before` or `after` the run), e.g. CPU frequencies. */
    fun details(phase: String): Map<String, Any?> = emptyMap()

    object None : DeviceProbe {
        override fun thermal(): String? = null
        override fun peakMemoryMb(): Double? = null
    }
}

/** Progress of a run: [phase] is `load`, `first`, `warmup`, `iterations`, `outputs`, `ok`, `failed` or `skipped`. */
fun interface Progress {
    fun update(artifact: String, setting: String, phase: String, i: Int, n: Int)
}

/** A run's `output`: `[samples, classes]` float32, inline (base64) or as a file beside the document. */
data class RunOutput(
    val shape: List<Int>,
    /** standard base64 of the raw little-endian float32 values (null when [file] is set) */
    val base64: String?,
    val file: String? = null,
    val sha256: String? = null,
) {
    /** The values (inline only). */
    fun values(where: String = "output"): FloatArray {
        val text = base64 ?: throw HarnessError("$where: the outputs are in the file $file, not inline")
        val raw = Tensors.decodeBase64(text, where)
        val expected = shape.fold(4L) { a, b -> a * b }
        if (raw.size.toLong() != expected) {
            throw HarnessError("$where holds ${raw.size} bytes; its shape $shape float32 takes $expected")
        }
        return Tensors.bytesToFloats(raw)
    }

    companion object {
        fun of(outputs: Outputs) = RunOutput(outputs.shape, Tensors.base64(outputs.values))
    }
}

/**
 * One run as a result document records it (docs/bundle.md section 5). Nullable fields that the schema allows to
 * be JSON null (`error`, `peak_memory_mb`, `thermal_before`, `thermal_after`) are written as null only when
 * named in [explicitNulls] (they were measured and unknown), and left out otherwise; the other nullable fields
 * are left out when null.
 */
data class RunRecord(
    val artifact: String,
    val artifactSha256: String,
    val runtime: String,
    val setting: String,
    val status: String,
    val error: String? = null,
    val runtimeVersion: String? = null,
    val threads: Int? = null,
    val meaning: String? = null,
    val warmup: Int? = null,
    val loadMs: Double? = null,
    val compileMs: Double? = null,
    val firstInferenceMs: Double? = null,
    val latenciesMs: List<Double>? = null,
    val precisionFlags: List<String>? = null,
    val peakMemoryMb: Double? = null,
    val thermalBefore: String? = null,
    val thermalAfter: String? = null,
    val output: RunOutput? = null,
    val appParity: Map<String, Any?>? = null,
    val details: Map<String, Any?>? = null,
    val explicitNulls: Set<String> = emptySet(),
) {
    companion object {
        const val OK = "ok"
        const val FAILED = "failed"
        const val SKIPPED = "skipped"
        const val IN_APP_WALL_TIME = "in-app wall time"
        const val HOST_WALL_TIME = "host wall time"
        const val INTERPRETED = "interpreter, not a latency"
        val MEANINGS = listOf(IN_APP_WALL_TIME, HOST_WALL_TIME, INTERPRETED)
        val STATUSES = listOf(OK, FAILED, SKIPPED)
    }
}

/** Stops a run between inferences when the user asks ([Harness.shouldStop]). */
class StoppedError : Exception("stopped by the user before the run completed")

/**
 * The run protocol of docs/bundle.md section 4, exactly (Python `worker.py`), against abstract [runtimes] (by
 * artifact target: `tflite`, `executorch`, `coreml`). The bundle must have been opened with [Bundle.open]
 * (every file checked) before: nothing runs from an unchecked bundle.
 *
 * For each planned run: thermal_before; load, timed (`compile_ms` first, where the runtime compiles), then
 * [Session.prepare] (untimed); the first
 * inference on chunk 0, timed; `warmup` untimed runs on chunk `i mod chunks`; `iterations` runs on chunk
 * `i mod chunks`, each timed alone, every latency kept in order; one untimed pass over every chunk in order for
 * the outputs (padded rows dropped); peak memory and thermal_after. A run is never dropped: a setting the device
 * lacks is `skipped` with why, a run that throws is `failed` with the error and what was measured before it.
 */
class Harness(
    val bundle: Bundle,
    val runtimes: Map<String, Runtime>,
    val clock: Clock = Clock.System,
    val probe: DeviceProbe = DeviceProbe.None,
    val progress: Progress? = null,
    /** the runs' `meaning` */
    val meaning: String = RunRecord.IN_APP_WALL_TIME,
    /** compute `app_parity` (the quick metrics against the bundle's reference, for the app's own screen) */
    val appParity: Boolean = true,
    /** polled between inferences: true stops the current run (recorded as failed) and the rest (failed, not run) */
    val shouldStop: () -> Boolean = { false },
    /** called with each run's record as soon as it is done (e.g. to keep a journal, or to update a screen) */
    val onRecord: ((RunRecord) -> Unit)? = null,
) {
    private val inputs = HashMap<String, Tensor>()
    private val references = HashMap<String, Tensor>()
    private var stopRequested = false

    /** Every run of [plan], in order, one record each. */
    fun run(plan: RunPlan): List<RunRecord> {
        val records = ArrayList<RunRecord>(plan.size)
        var attempted = 0
        var stopped = false
        for (planned in plan.runs) {
            val record = when {
                stopped -> base(planned, runtimes[planned.artifact.target]).copy(status = RunRecord.FAILED,
                    error = "not run: the user stopped the bundle's runs")
                else -> {
                    val runtime = runtimes[planned.artifact.target]
                    val why = planned.skip ?: if (runtime == null) "${planned.artifact.target} does not run here" else
                        runtime.isAvailable(planned.setting)
                    if (why != null) {
                        base(planned, runtime).copy(status = RunRecord.SKIPPED, error = why)
                    } else {
                        if (attempted > 0 && plan.cooldownSeconds > 0) {
                            progress?.update(planned.artifact.name, planned.setting, "cooldown", 0, 1)
                            clock.sleepMillis((plan.cooldownSeconds * 1000).toLong())
                        }
                        attempted++
                        val r = attempt(planned, runtime!!)
                        if (stopRequested) stopped = true
                        r
                    }
                }
            }
            if (record.status == RunRecord.SKIPPED) {
                progress?.update(planned.artifact.name, planned.setting, "skipped", 1, 1)
            }
            records.add(record)
            onRecord?.invoke(record)
        }
        return records
    }

    private fun base(planned: PlannedRun, runtime: Runtime?): RunRecord {
        val a = planned.artifact
        return RunRecord(
            artifact = a.name, artifactSha256 = a.sha256,
            runtime = runtime?.name ?: runtimeTitle(a.target),
            runtimeVersion = runtime?.version,
            setting = planned.setting, status = RunRecord.SKIPPED,
            threads = planned.threads, meaning = meaning, warmup = planned.warmup,
        )
    }

    private fun ms(start: Long, end: Long): Double = (end - start) / 1e6

    private fun attempt(planned: PlannedRun, runtime: Runtime): RunRecord {
        val a = planned.artifact
        val name = a.name
        val setting = planned.setting
        var record = base(planned, runtime).copy(
            precisionFlags = runtime.precisionFlags(setting).takeIf { it.isNotEmpty() })
        val nulls = HashSet<String>()
        val latencies = ArrayList<Double>()
        val details = LinkedHashMap<String, Any?>()
        var session: Session? = null
        try {
            val input = inputs.getOrPut(a.input.tensor) { bundle.inputOf(a) }
            val chunks = Tensors.chunks(input, a.batch)
            if (chunks.isEmpty()) throw HarnessError("the input tensor ${a.input.tensor} holds no samples")
            probe.beforeRun()
            details.putAll(probe.details("before"))
            val thermalBefore = probe.thermal()
            if (thermalBefore == null) nulls.add("thermal_before")
            record = record.copy(thermalBefore = thermalBefore)

            progress?.update(name, setting, "load", 0, 1)
            if (runtime.compiles) {
                val t0 = clock.nanoTime()
                runtime.compile(a, setting)
                record = record.copy(compileMs = ms(t0, clock.nanoTime()))
            }
            val t0 = clock.nanoTime()
            session = runtime.load(a, setting, planned.threads)
            record = record.copy(loadMs = ms(t0, clock.nanoTime()))
            session.prepare(chunks)

            progress?.update(name, setting, "first", 0, 1)
            val t1 = clock.nanoTime()
            session.run(0, chunks[0])
            record = record.copy(firstInferenceMs = ms(t1, clock.nanoTime()))

            for (i in 0 until planned.warmup) {
                if (shouldStop()) throw StoppedError()
                progress?.update(name, setting, "warmup", i, planned.warmup)
                session.run(i % chunks.size, chunks[i % chunks.size])
            }
            for (i in 0 until planned.iterations) {
                if (shouldStop()) throw StoppedError()
                progress?.update(name, setting, "iterations", i, planned.iterations)
                val chunk = chunks[i % chunks.size]
                val t = clock.nanoTime()
                session.run(chunk.index, chunk)
                latencies.add(ms(t, clock.nanoTime()))
            }
            val outputs = ArrayList<FloatArray>(chunks.size)
            for (chunk in chunks) {
                if (shouldStop()) throw StoppedError()
                progress?.update(name, setting, "outputs", chunk.index, chunks.size)
                outputs.add(session.run(chunk.index, chunk))
            }
            val assembled = Tensors.assemble(chunks, outputs)
            session.details()?.let { details.putAll(it) }
            record = record.copy(
                latenciesMs = latencies.toList(),
                output = RunOutput.of(assembled),
                appParity = if (appParity) quickParity(a, assembled) else null,
            )
            record = finish(record, nulls, details).copy(status = RunRecord.OK, error = null)
            nulls.add("error")
            progress?.update(name, setting, "ok", 1, 1)
            return record.copy(explicitNulls = nulls.toSet())
        } catch (e: Throwable) {
            if (e is InterruptedException) Thread.currentThread().interrupt()
            if (e is StoppedError || e is InterruptedException) stopRequested = true
            if (e is VirtualMachineError && e !is OutOfMemoryError && e !is StackOverflowError) throw e
            try { session?.details()?.let { details.putAll(it) } } catch (_: Exception) { }
            val failed = finish(record.copy(latenciesMs = if (record.loadMs != null) latencies.toList() else null), nulls, details)
            progress?.update(name, setting, "failed", 1, 1)
            return failed.copy(status = RunRecord.FAILED, error = HarnessError.describe(e).take(4096),
                explicitNulls = nulls.toSet())
        } finally {
            try { session?.close() } catch (_: Throwable) { }
        }
    }

    /** peak memory, thermal_after and the details, measured after the run (also after a failed one). */
    private fun finish(record: RunRecord, nulls: MutableSet<String>, details: MutableMap<String, Any?>): RunRecord {
        val peak = try { probe.peakMemoryMb() } catch (_: Exception) { null }
        if (peak == null) nulls.add("peak_memory_mb")
        val thermal = try { probe.thermal() } catch (_: Exception) { null }
        if (thermal == null) nulls.add("thermal_after")
        try { details.putAll(probe.details("after")) } catch (_: Exception) { }
        return record.copy(peakMemoryMb = peak, thermalAfter = thermal, details = details.takeIf { it.isNotEmpty() }?.toMap())
    }

    /** The quick metrics of [outputs] against the artifact's reference (the host judges again, never trusting them). */
    private fun quickParity(a: Artifact, outputs: Outputs): Map<String, Any?> {
        val reference = references.getOrPut(a.output.reference) { bundle.referenceOf(a) }
        if (reference.shape != outputs.shape) {
            return linkedMapOf("pass" to false,
                "problems" to listOf("the outputs are ${outputs.shape}; the reference is ${reference.shape}"))
        }
        val m = Parity.compare(outputs.values, reference.floats!!, outputs.samples)
        return m.toJson() + linkedMapOf("pass" to Parity.judge(m, a.tolerance).isEmpty(),
            "problems" to Parity.judge(m, a.tolerance))
    }

    companion object {
        /** The usual name of the runtime of [target], for runs of targets no runtime here runs. */
        fun runtimeTitle(target: String): String = when (target) {
            "tflite" -> "LiteRT"
            "executorch" -> "ExecuTorch"
            "coreml" -> "Core ML"
            "onnx" -> "ONNX Runtime"
            else -> target
        }
    }
}
