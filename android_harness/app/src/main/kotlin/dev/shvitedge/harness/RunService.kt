package dev.shvitedge.harness

import android.app.Notification
import android.app.NotificationChannel
import android.app.NotificationManager
import android.app.PendingIntent
import android.app.Service
import android.content.Context
import android.content.Intent
import android.content.pm.ServiceInfo
import android.os.Build
import android.os.IBinder
import android.os.PowerManager
import dev.shvitedge.harness.core.HarnessError
import dev.shvitedge.harness.core.Pairing
import dev.shvitedge.harness.core.Posting
import java.io.File

/**
 * What the screen shows: the current run's progress, and the last outcome. Updated by [RunService] on its worker
 * thread; listeners are called there too (the activity posts to its UI thread).
 */
object RunState {
    @Volatile var running = false
    @Volatile var progress = ""
    @Volatile var lines: List<String> = emptyList()
    @Volatile var resultFile: File? = null
    @Volatile var error: String? = null
    @Volatile var stopRequested = false
    @Volatile var postStatus: String? = null
    private val listeners = java.util.concurrent.CopyOnWriteArrayList<() -> Unit>()

    fun listen(l: () -> Unit) = listeners.add(l)
    fun unlisten(l: () -> Unit) = listeners.remove(l)
    fun changed() = listeners.forEach { it() }
}

/**
 * A foreground service that runs one bundle, holding a partial wake lock, so the run goes on with the screen off
 * or the app in the background. Start it with [start].
 */
class RunService : Service() {

    override fun onBind(intent: Intent?): IBinder? = null

    override fun onStartCommand(intent: Intent?, flags: Int, startId: Int): Int {
        // a service started with startForegroundService must call startForeground, even to stop at once
        goForeground("checking the bundle ...")
        val bundle = intent?.getStringExtra(EXTRA_BUNDLE)
        if (bundle == null || RunState.running) {
            if (!RunState.running) stopForeground(STOP_FOREGROUND_REMOVE)
            stopSelfResult(startId)
            return START_NOT_STICKY
        }
        val pairing = intent.getStringExtra(EXTRA_PAIRING)
        val cooldown = intent.getDoubleExtra(EXTRA_COOLDOWN, 0.0)
        RunState.running = true
        RunState.stopRequested = false
        RunState.error = null
        RunState.lines = emptyList()
        RunState.resultFile = null
        RunState.postStatus = null
        RunState.changed()
        Thread({ runBundle(File(bundle), pairing, cooldown, startId) }, "shvit-edge-run").start()
        return START_NOT_STICKY
    }

    private fun runBundle(bundle: File, pairing: String?, cooldown: Double, startId: Int) {
        val power = getSystemService(Context.POWER_SERVICE) as PowerManager
        val lock = power.newWakeLock(PowerManager.PARTIAL_WAKE_LOCK, "shvit-edge:run")
        lock.acquire(6 * 60 * 60 * 1000L)
        try {
            var last = 0L
            val outcome = BundleRunner(this).run(bundle, null, cooldown, progress = { text ->
                RunState.progress = text
                RunState.changed()
                val now = System.currentTimeMillis()
                if (now - last > 1000) { last = now; notify(text) }
            }, shouldStop = { RunState.stopRequested })
            RunState.lines = outcome.summary
            RunState.resultFile = outcome.file
            RunState.progress = "done: ${outcome.file.absolutePath}"
            if (pairing != null) {
                RunState.postStatus = "posting ..."
                RunState.changed()
                RunState.postStatus = try {
                    val answer = Posting.post(outcome.document, Pairing.parse(pairing))
                    (if (answer.stored) "posted: " else "not posted (HTTP ${answer.status}${if (answer.retry) ", retry later" else ""}): ") + answer.message
                } catch (e: HarnessError) {
                    "not posted: ${e.message}"
                }
            }
        } catch (e: Throwable) {
            RunState.error = HarnessError.describe(e)
            RunState.progress = "refused: ${RunState.error}"
        } finally {
            RunState.running = false
            RunState.changed()
            if (lock.isHeld) lock.release()
            stopForeground(STOP_FOREGROUND_REMOVE)
            stopSelfResult(startId)
        }
    }

    private fun notification(text: String): Notification {
        val manager = getSystemService(NotificationManager::class.java)
        if (manager.getNotificationChannel(CHANNEL) == null) {
            manager.createNotificationChannel(NotificationChannel(CHANNEL, "Bundle runs", NotificationManager.IMPORTANCE_LOW))
        }
        val open = PendingIntent.getActivity(this, 0, Intent(this, MainActivity::class.java), PendingIntent.FLAG_IMMUTABLE)
        return Notification.Builder(this, CHANNEL)
            .setContentTitle("shvit-edge: running a bundle")
            .setContentText(text)
            .setSmallIcon(android.R.drawable.stat_sys_upload)
            .setOngoing(true)
            .setContentIntent(open)
            .build()
    }

    private fun goForeground(text: String) {
        if (Build.VERSION.SDK_INT >= 34) {
            startForeground(NOTIFICATION, notification(text), ServiceInfo.FOREGROUND_SERVICE_TYPE_SPECIAL_USE)
        } else {
            startForeground(NOTIFICATION, notification(text))
        }
    }

    private fun notify(text: String) {
        getSystemService(NotificationManager::class.java).notify(NOTIFICATION, notification(text))
    }

    companion object {
        const val EXTRA_BUNDLE = "bundle"
        const val EXTRA_PAIRING = "pairing"
        const val EXTRA_COOLDOWN = "cooldown"
        private const val CHANNEL = "runs"
        private const val NOTIFICATION = 1

        fun start(context: Context, bundle: File, pairing: String?, cooldownSeconds: Double) {
            val intent = Intent(context, RunService::class.java)
                .putExtra(EXTRA_BUNDLE, bundle.absolutePath)
                .putExtra(EXTRA_COOLDOWN, cooldownSeconds)
            if (pairing != null) intent.putExtra(EXTRA_PAIRING, pairing)
            context.startForegroundService(intent)
        }
    }
}
