package dev.shvitedge.harness

import android.content.Context
import dev.shvitedge.harness.core.Bundle
import dev.shvitedge.harness.core.BundleZip
import dev.shvitedge.harness.core.Clock
import dev.shvitedge.harness.core.Harness
import dev.shvitedge.harness.core.HarnessError
import dev.shvitedge.harness.core.ResultDocument
import dev.shvitedge.harness.core.RunPlan
import dev.shvitedge.harness.core.RunRecord
import dev.shvitedge.harness.core.Runtime
import dev.shvitedge.harness.core.Stats
import java.io.File
import java.text.SimpleDateFormat
import java.util.Date
import java.util.Locale
import java.util.TimeZone

/**
 * Runs one bundle on this phone, the same way for the app's screen and for the instrumentation test: check it
 * (every file's size and sha256), run every artifact under every setting (core's Harness), and write the result
 * document to `<external files>/results/<bundle-id>-<time>.json`. While it runs, the runs done so far are kept in
 * `<name>.partial.json`, so a crash of a native runtime does not lose them.
 */
class BundleRunner(private val context: Context) {

    class Outcome(val file: File, val document: ResultDocument, val summary: List<String>)

    /** The targets this app runs, and their runtimes (created only when a bundle needs them). */
    private fun runtimes(): Map<String, Runtime> = mapOf("tflite" to LiteRtRuntime(), "executorch" to ExecuTorchRuntime())

    fun resultsDir(): File = File(context.getExternalFilesDir(null) ?: context.filesDir, "results").also { it.mkdirs() }

    /** A bundle folder, or a zip unpacked (checked first) into [into]. */
    private fun resolve(path: File, into: File, progress: (String) -> Unit): File {
        if (path.isDirectory || path.name == Bundle.BUNDLE_JSON) return path
        if (!path.isFile) throw HarnessError("${path.path}: no such bundle (a folder with bundle.json, or its .zip)")
        into.parentFile?.mkdirs()
        progress("unpacking ${path.name} ...")
        return BundleZip.unpack(path, into)
    }

    fun run(
        bundlePath: File,
        resultName: String? = null,
        cooldownSeconds: Double = 0.0,
        progress: (String) -> Unit = {},
        shouldStop: () -> Boolean = { false },
    ): Outcome {
        // a zip is unpacked into the cache for the run, and removed after it
        val unpacked = File(context.cacheDir, "bundles/${bundlePath.nameWithoutExtension}-${System.currentTimeMillis()}")
        try {
            return runFolder(resolve(bundlePath, unpacked, progress), resultName, cooldownSeconds, progress, shouldStop)
        } finally {
            unpacked.deleteRecursively()
        }
    }

    private fun runFolder(
        root: File,
        resultName: String?,
        cooldownSeconds: Double,
        progress: (String) -> Unit,
        shouldStop: () -> Boolean,
    ): Outcome {
        progress("checking the bundle ...")
        val bundle = Bundle.open(root) { progress(it) }
        val runtimes = runtimes()
        val plan = RunPlan.make(bundle, "Android", runtimes.keys, cooldownSeconds = cooldownSeconds)
        val name = safeName(resultName) ?: "${bundle.id}-${stamp()}"
        val file = File(resultsDir(), "$name.json")
        val partial = File(resultsDir(), "$name.partial.json")
        val done = ArrayList<RunRecord>()
        val createdAt = ResultDocument.isoUtc()
        var k = 0
        val harness = Harness(
            bundle, runtimes, Clock.System, AndroidProbe(context),
            progress = { artifact, setting, phase, i, n ->
                progress("[${k + 1}/${plan.size}] $artifact ($setting): $phase" + if (n > 1) " ${i + 1}/$n" else "")
            },
            shouldStop = shouldStop,
            onRecord = { record ->
                k++
                done.add(record)
                try {
                    ResultDocument.of(bundle, Device.harness(), Device.info(), done.toList(), createdAt).write(partial)
                } catch (_: Exception) {
                    // the journal is a convenience; the final document is what counts
                }
            },
        )
        val records = harness.run(plan)
        val document = ResultDocument.of(bundle, Device.harness(), Device.info(), records, createdAt)
        document.write(file)
        partial.delete()
        return Outcome(file, document, summary(records))
    }

    companion object {
        fun stamp(): String = SimpleDateFormat("yyyyMMdd-HHmmss", Locale.ROOT)
            .apply { timeZone = TimeZone.getTimeZone("UTC") }.format(Date())

        /** A result name given on the command line, as a plain file name (no folders), without `.json`. */
        fun safeName(name: String?): String? {
            if (name.isNullOrBlank()) return null
            val base = name.removeSuffix(".json")
            if (!base.matches(Regex("[A-Za-z0-9._-]{1,200}")) || base.startsWith(".")) {
                throw HarnessError("result name ${HarnessError.quoted(name)}: use letters, digits, '.', '_' and '-' only")
            }
            return base
        }

        /** One line per run: status, median latency, and the app's own quick parity against the reference. */
        fun summary(records: List<RunRecord>): List<String> = records.map { r ->
            val head = "${r.artifact} (${r.setting}): ${r.status}"
            when (r.status) {
                RunRecord.OK -> {
                    val s = r.latenciesMs?.let { Stats.latency(it) }
                    val timing = s?.let { "p50 %.3f ms, p90 %.3f ms (n=%d)".format(Locale.ROOT, it.p50, it.p90, it.count) } ?: "no latencies"
                    val parity = r.appParity?.let { p ->
                        val cosine = (p["cosine"] as? Double)?.let { "%.6f".format(Locale.ROOT, it) } ?: "n/a"
                        "cosine $cosine, " + if (p["pass"] == true) "PASS" else "FAIL: ${(p["problems"] as? List<*>)?.joinToString("; ")}"
                    } ?: ""
                    "$head, $timing; $parity"
                }
                else -> "$head: ${r.error}"
            }
        }
    }
}
