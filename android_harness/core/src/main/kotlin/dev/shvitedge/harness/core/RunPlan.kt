package dev.shvitedge.harness.core

/**
 * One run to do: an artifact under one of its `run.settings`. [skip] is set when the run is recorded as
 * `skipped` without being attempted (an artifact of a target this platform does not run).
 */
data class PlannedRun(
    val artifact: Artifact,
    val setting: String,
    val warmup: Int,
    val iterations: Int,
    val threads: Int,
    val skip: String? = null,
)

/**
 * The runs of a bundle on one platform, in order: for each artifact, for each setting of its `run.settings`. An
 * artifact whose target the app does not run ([targets]) gets one skipped run per setting, with the error
 * "<target> does not run on <platform>". [cooldownSeconds]: a pause between runs (not before the first).
 */
class RunPlan(val runs: List<PlannedRun>, val cooldownSeconds: Double = 0.0) {

    val size: Int get() = runs.size

    companion object {
        /**
         * The plan of [bundle] for [platform] (e.g. `Android`), whose app runs the artifacts of [targets]
         * (e.g. `tflite`, `executorch`). [warmup], [iterations], [threads]: overrides of every artifact's
         * `run` (null: the bundle's). [only]: only the artifacts of these names (empty: all).
         */
        fun make(
            bundle: Bundle,
            platform: String,
            targets: Set<String>,
            warmup: Int? = null,
            iterations: Int? = null,
            threads: Int? = null,
            only: Set<String> = emptySet(),
            cooldownSeconds: Double = 0.0,
        ): RunPlan {
            if (warmup != null && warmup < 0) throw HarnessError("warmup must be 0 or more, not $warmup")
            if (iterations != null && iterations < 1) throw HarnessError("iterations must be 1 or more, not $iterations")
            if (threads != null && threads < 1) throw HarnessError("threads must be 1 or more, not $threads")
            if (cooldownSeconds < 0 || cooldownSeconds.isNaN()) throw HarnessError("the cooldown must be 0 s or more")
            val missing = only - bundle.artifacts.map { it.name }.toSet()
            if (missing.isNotEmpty()) {
                throw HarnessError("${missing.sorted().first()}: not in the bundle (it holds: " +
                    "${bundle.artifacts.joinToString(", ") { it.name }})")
            }
            val runs = ArrayList<PlannedRun>()
            for (artifact in bundle.artifacts) {
                if (only.isNotEmpty() && artifact.name !in only) continue
                val skip = if (artifact.target in targets) null else "${artifact.target} does not run on $platform"
                for (setting in artifact.run.settings) {
                    runs.add(PlannedRun(artifact, setting, warmup ?: artifact.run.warmup,
                        iterations ?: artifact.run.iterations, threads ?: artifact.run.threads, skip))
                }
            }
            return RunPlan(runs, cooldownSeconds)
        }
    }
}
