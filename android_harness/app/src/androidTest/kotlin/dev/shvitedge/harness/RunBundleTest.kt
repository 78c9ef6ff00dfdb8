package dev.shvitedge.harness

import android.os.Build
import android.os.Bundle
import android.os.ParcelFileDescriptor
import androidx.test.ext.junit.runners.AndroidJUnit4
import androidx.test.platform.app.InstrumentationRegistry
import dev.shvitedge.harness.core.HarnessError
import org.junit.Assert.assertTrue
import org.junit.Test
import org.junit.runner.RunWith
import java.io.File

/**
 * Runs one bundle headless, as the app's screen would, and reports the result document:
 *
 *     adb shell am instrument -w -r -e bundle /data/local/tmp/shvit-edge/<id> [-e result NAME] \
 *         dev.shvitedge.harness.test/androidx.test.runner.AndroidJUnitRunner
 *
 * `bundle`: a bundle folder or its .zip on the device. Without it, the one bundle found in
 * /data/local/tmp/shvit-edge/ or /sdcard/shvit-edge/ (a folder holding bundle.json, or a .zip) is run (device farms
 * that cannot pass arguments). `result`: the document's file name (default `<bundle-id>-<time>`).
 *
 * Reports, as instrumentation status lines (`am instrument -r`):
 *   INSTRUMENTATION_STATUS: shvit_edge_progress=TEXT      while it runs
 *   INSTRUMENTATION_STATUS: shvit_edge_result=PATH        the document, in the app's external files dir
 *   INSTRUMENTATION_STATUS: shvit_edge_error=TEXT         when the bundle is refused or the run cannot start
 * and copies the document into `additionalTestOutputDir` (when the runner is given one) so device farms collect it.
 * The test fails only when no document could be written: failed and skipped runs are in the document.
 */
@RunWith(AndroidJUnit4::class)
class RunBundleTest {
    private val instrumentation = InstrumentationRegistry.getInstrumentation()
    private val arguments: Bundle = InstrumentationRegistry.getArguments()

    private fun status(key: String, value: String) {
        // one line: am instrument prints KEY=VALUE and the host parses it line by line
        instrumentation.sendStatus(STATUS_CODE, Bundle().apply { putString(key, HarnessError.oneLine(value)) })
    }

    private fun shell(command: String) {
        val pfd: ParcelFileDescriptor = instrumentation.uiAutomation.executeShellCommand(command)
        ParcelFileDescriptor.AutoCloseInputStream(pfd).use { it.readBytes() }
    }

    /** Let the app read a bundle on shared storage (granted through the instrumentation's shell, not by a person). */
    private fun grantStorage(path: File) {
        val p = path.absolutePath
        if (!(p.startsWith("/sdcard") || p.startsWith("/storage"))) return
        val pkg = instrumentation.targetContext.packageName
        try {
            if (Build.VERSION.SDK_INT >= 30) shell("appops set $pkg MANAGE_EXTERNAL_STORAGE allow")
            else shell("pm grant $pkg android.permission.READ_EXTERNAL_STORAGE")
        } catch (e: Exception) {
            status("shvit_edge_progress", "could not grant storage access: ${HarnessError.describe(e)}")
        }
    }

    private fun findBundle(): File {
        arguments.getString("bundle")?.let { return File(it) }
        val found = listOf(File("/data/local/tmp/shvit-edge"), File("/sdcard/shvit-edge")).flatMap { dir ->
            dir.listFiles()?.filter { File(it, "bundle.json").isFile || it.name.endsWith(".zip") } ?: emptyList()
        }
        if (found.size != 1) {
            throw HarnessError("give the bundle with -e bundle PATH (found ${found.size} bundles in /data/local/tmp/shvit-edge " +
                "and /sdcard/shvit-edge: ${found.joinToString(", ")})")
        }
        return found[0]
    }

    @Test
    fun runBundle() {
        val context = instrumentation.targetContext
        val outcome = try {
            val bundle = findBundle()
            grantStorage(bundle)
            status("shvit_edge_progress", "bundle ${bundle.absolutePath}")
            var last = 0L
            BundleRunner(context).run(bundle, arguments.getString("result"),
                cooldownSeconds = arguments.getString("cooldown")?.toDoubleOrNull() ?: 0.0,
                progress = { text ->
                    val now = System.currentTimeMillis()
                    // at most a few lines a second: every phase change, iterations thinned
                    if (now - last >= 250 || !text.contains("iterations")) {
                        last = now
                        status("shvit_edge_progress", text)
                    }
                })
        } catch (e: Throwable) {
            status("shvit_edge_error", HarnessError.describe(e))
            throw e
        }
        for (line in outcome.summary) status("shvit_edge_progress", line)
        arguments.getString("additionalTestOutputDir")?.let { dir ->
            try {
                val target = File(dir, outcome.file.name)
                target.parentFile?.mkdirs()
                outcome.file.copyTo(target, overwrite = true)
            } catch (e: Exception) {
                status("shvit_edge_progress", "could not copy the result to $dir: ${HarnessError.describe(e)}")
            }
        }
        status("shvit_edge_result", outcome.file.absolutePath)
        assertTrue(outcome.file.isFile)
    }

    companion object {
        /** a status code of its own, apart from AndroidJUnitRunner's per-test codes (1, 0, -1, -2, -3, -4) */
        const val STATUS_CODE = 2
    }
}
