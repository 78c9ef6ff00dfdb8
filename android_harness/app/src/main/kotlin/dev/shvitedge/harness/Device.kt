package dev.shvitedge.harness

import android.content.Context
import android.os.Build
import android.os.PowerManager
import dev.shvitedge.harness.core.DeviceInfo
import dev.shvitedge.harness.core.DeviceProbe
import dev.shvitedge.harness.core.HarnessInfo
import java.io.File

/** This phone as a result document's `device`, and this app as its `harness`. */
object Device {
    fun info(): DeviceInfo = DeviceInfo(
        model = Build.MODEL,
        os = "Android",
        manufacturer = Build.MANUFACTURER,
        osVersion = "${Build.VERSION.RELEASE} (API ${Build.VERSION.SDK_INT})",
        soc = if (Build.VERSION.SDK_INT >= 31 && Build.SOC_MODEL != Build.UNKNOWN) {
            "${Build.SOC_MANUFACTURER} ${Build.SOC_MODEL}"
        } else {
            Build.HARDWARE
        },
        arch = Build.SUPPORTED_ABIS.firstOrNull(),
        appVersion = BuildConfig.VERSION_NAME,
        cpus = java.lang.Runtime.getRuntime().availableProcessors(),
    )

    fun harness(): HarnessInfo = HarnessInfo(
        name = "shvit-edge android harness",
        version = BuildConfig.VERSION_NAME,
        build = "${BuildConfig.BUILD_TYPE} ${BuildConfig.VERSION_CODE}",
    )
}

/**
 * Thermal status (PowerManager, API 29+), the process's peak resident memory (VmHWM, reset before each run where
 * the kernel allows), and the CPU frequencies before and after each run (sysfs `scaling_cur_freq`, kHz).
 */
class AndroidProbe(context: Context) : DeviceProbe {
    private val power = context.getSystemService(Context.POWER_SERVICE) as PowerManager

    override fun thermal(): String? {
        if (Build.VERSION.SDK_INT < 29) return null
        return when (power.currentThermalStatus) {
            PowerManager.THERMAL_STATUS_NONE -> "none"
            PowerManager.THERMAL_STATUS_LIGHT -> "light"
            PowerManager.THERMAL_STATUS_MODERATE -> "moderate"
            PowerManager.THERMAL_STATUS_SEVERE -> "severe"
            PowerManager.THERMAL_STATUS_CRITICAL -> "critical"
            PowerManager.THERMAL_STATUS_EMERGENCY -> "emergency"
            PowerManager.THERMAL_STATUS_SHUTDOWN -> "shutdown"
            else -> null
        }
    }

    override fun beforeRun() {
        // "5" resets the peak RSS mark (Linux 4.0+), so peak_memory_mb is this run's; harmless where refused
        try { File("/proc/self/clear_refs").writeText("5") } catch (_: Exception) { }
    }

    override fun peakMemoryMb(): Double? = try {
        File("/proc/self/status").readLines().firstOrNull { it.startsWith("VmHWM:") }
            ?.split(Regex("\\s+"))?.getOrNull(1)?.toLongOrNull()?.let { it / 1024.0 }
    } catch (_: Exception) {
        null
    }

    override fun details(phase: String): Map<String, Any?> {
        val freqs = cpuFrequencies()
        return if (freqs.isEmpty()) emptyMap() else mapOf("cpu_freq_khz_$phase" to freqs)
    }

    companion object {
        /** cpuN -> current frequency in kHz, for the CPUs whose sysfs entry is readable. */
        fun cpuFrequencies(): Map<String, Long> {
            val cpus = File("/sys/devices/system/cpu").listFiles { f -> f.name.matches(Regex("cpu[0-9]+")) } ?: return emptyMap()
            val out = sortedMapOf<String, Long>(compareBy { it.removePrefix("cpu").toInt() })
            for (cpu in cpus) {
                try {
                    File(cpu, "cpufreq/scaling_cur_freq").readText().trim().toLongOrNull()?.let { out[cpu.name] = it }
                } catch (_: Exception) {
                    // offline cores and SELinux-restricted entries are left out
                }
            }
            return LinkedHashMap(out)
        }
    }
}
