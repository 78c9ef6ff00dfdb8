package dev.shvitedge.harness

import android.Manifest
import android.app.Activity
import android.content.Intent
import android.content.pm.PackageManager
import android.os.Build
import android.os.Bundle
import android.text.InputType
import android.view.View
import android.view.WindowManager
import android.widget.Button
import android.widget.CheckBox
import android.widget.EditText
import android.widget.LinearLayout
import android.widget.ScrollView
import android.widget.TextView
import dev.shvitedge.harness.core.HarnessError
import dev.shvitedge.harness.core.Pairing
import dev.shvitedge.harness.core.Posting
import dev.shvitedge.harness.core.ResultDocument
import java.io.File

/**
 * The app's one screen: choose a bundle (a .zip picked with the system file picker, or a folder path such as
 * /data/local/tmp/shvit-edge/<id>), run it in [RunService], watch the progress, read the summary (status, p50/p90,
 * the app's own cosine pass/fail against the bundle's reference), and optionally post the result to
 * `shvit-edge results listen` (paste the pairing JSON it prints). `am start -n dev.shvitedge.harness/.MainActivity
 * --es bundle PATH` starts a run directly.
 */
class MainActivity : Activity() {
    private lateinit var path: EditText
    private lateinit var pairing: EditText
    private lateinit var autoPost: CheckBox
    private lateinit var cooldown: EditText
    private lateinit var status: TextView
    private lateinit var summary: TextView
    private lateinit var runButton: Button
    private lateinit var stopButton: Button
    private lateinit var postButton: Button
    private val listener: () -> Unit = { runOnUiThread { render() } }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        val pad = (12 * resources.displayMetrics.density).toInt()
        val column = LinearLayout(this).apply { orientation = LinearLayout.VERTICAL; setPadding(pad, pad, pad, pad) }
        fun label(text: String) = TextView(this).apply { this.text = text }.also { column.addView(it) }
        label("Bundle: a folder path, or pick a .zip")
        path = EditText(this).apply {
            hint = "/data/local/tmp/shvit-edge/<bundle>"
            setSingleLine()
            inputType = InputType.TYPE_CLASS_TEXT or InputType.TYPE_TEXT_VARIATION_URI
        }.also { column.addView(it) }
        Button(this).apply { text = "Pick a bundle .zip"; setOnClickListener { pick() } }.also { column.addView(it) }
        label("Cooldown between runs (s)")
        cooldown = EditText(this).apply { setText("0"); inputType = InputType.TYPE_CLASS_NUMBER or InputType.TYPE_NUMBER_FLAG_DECIMAL }
            .also { column.addView(it) }
        label("Pairing from `shvit-edge results listen` (optional): {\"url\": ..., \"token\": ...}")
        pairing = EditText(this).apply { hint = "{\"url\": \"http://192.168.1.20:8765/results\", \"token\": \"...\"}" }
            .also { column.addView(it) }
        autoPost = CheckBox(this).apply { text = "Post the result when the run ends" }.also { column.addView(it) }
        val buttons = LinearLayout(this).apply { orientation = LinearLayout.HORIZONTAL }.also { column.addView(it) }
        runButton = Button(this).apply { text = "Run"; setOnClickListener { startRun() } }.also { buttons.addView(it) }
        stopButton = Button(this).apply {
            text = "Stop"
            setOnClickListener { RunState.stopRequested = true; RunState.changed() }
        }.also { buttons.addView(it) }
        postButton = Button(this).apply { text = "Post result"; setOnClickListener { postLast() } }.also { buttons.addView(it) }
        status = TextView(this).apply { setTextIsSelectable(true) }.also { column.addView(it) }
        summary = TextView(this).apply { setTextIsSelectable(true); typeface = android.graphics.Typeface.MONOSPACE }
            .also { column.addView(it) }
        setContentView(ScrollView(this).apply { addView(column) })
        getSharedPreferences("harness", MODE_PRIVATE).let { prefs ->
            path.setText(prefs.getString("path", ""))
            pairing.setText(prefs.getString("pairing", ""))
        }
        if (Build.VERSION.SDK_INT >= 33 && checkSelfPermission(Manifest.permission.POST_NOTIFICATIONS) != PackageManager.PERMISSION_GRANTED) {
            requestPermissions(arrayOf(Manifest.permission.POST_NOTIFICATIONS), 1)
        }
        intent?.getStringExtra("bundle")?.let { path.setText(it); startRun() }
    }

    override fun onResume() {
        super.onResume()
        RunState.listen(listener)
        render()
    }

    override fun onPause() {
        super.onPause()
        RunState.unlisten(listener)
        getSharedPreferences("harness", MODE_PRIVATE).edit()
            .putString("path", path.text.toString()).putString("pairing", pairing.text.toString()).apply()
    }

    private fun pick() {
        startActivityForResult(Intent(Intent.ACTION_OPEN_DOCUMENT).apply {
            addCategory(Intent.CATEGORY_OPENABLE)
            type = "application/zip"
        }, PICK)
    }

    @Deprecated("the platform Activity API")
    override fun onActivityResult(requestCode: Int, resultCode: Int, data: Intent?) {
        super.onActivityResult(requestCode, resultCode, data)
        val uri = data?.data ?: return
        if (requestCode != PICK || resultCode != RESULT_OK) return
        status.text = "copying the zip ..."
        Thread {
            try {
                // copied into the app's storage first: the runtimes and the checks read plain files
                val target = File(cacheDir, "picked/${System.currentTimeMillis()}.zip").also { it.parentFile?.mkdirs() }
                contentResolver.openInputStream(uri)!!.use { input -> target.outputStream().use { input.copyTo(it) } }
                runOnUiThread { path.setText(target.absolutePath); status.text = "picked: ${target.name}" }
            } catch (e: Exception) {
                runOnUiThread { status.text = "cannot read the zip: ${HarnessError.describe(e)}" }
            }
        }.start()
    }

    private fun startRun() {
        val bundle = path.text.toString().trim()
        if (bundle.isEmpty()) { status.text = "give a bundle first"; return }
        val text = pairing.text.toString().trim()
        val pair = if (autoPost.isChecked && text.isNotEmpty()) {
            try { Pairing.parse(text); text } catch (e: HarnessError) { status.text = e.message; return }
        } else null
        RunService.start(this, File(bundle), pair, cooldown.text.toString().toDoubleOrNull() ?: 0.0)
    }

    private fun postLast() {
        val file = RunState.resultFile ?: run { status.text = "no result to post yet"; return }
        val pair = try { Pairing.parse(pairing.text.toString()) } catch (e: HarnessError) { status.text = e.message; return }
        status.text = "posting ..."
        Thread {
            val message = try {
                val answer = Posting.post(ResultDocument.read(file), pair)
                (if (answer.stored) "posted: " else "not posted (HTTP ${answer.status}): ") + answer.message
            } catch (e: Exception) {
                "not posted: ${HarnessError.describe(e)}"
            }
            RunState.postStatus = message
            RunState.changed()
        }.start()
    }

    private fun render() {
        val running = RunState.running
        // keep the screen on while a run goes (the service also holds a wake lock)
        if (running) window.addFlags(WindowManager.LayoutParams.FLAG_KEEP_SCREEN_ON)
        else window.clearFlags(WindowManager.LayoutParams.FLAG_KEEP_SCREEN_ON)
        runButton.isEnabled = !running
        stopButton.visibility = if (running) View.VISIBLE else View.GONE
        postButton.isEnabled = !running && RunState.resultFile != null
        status.text = listOfNotNull(RunState.progress.takeIf { it.isNotEmpty() }, RunState.postStatus,
            if (RunState.stopRequested && running) "stopping after the current inference ..." else null).joinToString("\n")
        summary.text = RunState.lines.joinToString("\n")
    }

    companion object {
        private const val PICK = 7
    }
}
