package dev.shvitedge.harness.core

import kotlin.math.abs
import kotlin.math.floor
import kotlin.math.log10
import kotlin.math.sqrt

/**
 * Latency statistics, equal (to 1e-9) to Python's `latency_stats` (shvit_edge/harness/records.py). For the app's
 * own screen only: the host computes its own from `latencies_ms`.
 */
data class LatencyStats(
    val count: Int,
    val min: Double,
    val max: Double,
    val mean: Double,
    /** the mean after cutting floor(10%) of the values from each end */
    val trimmedMean: Double,
    /** population standard deviation */
    val std: Double,
    /** std / mean; null when mean <= 0 */
    val cv: Double?,
    val p50: Double,
    val p90: Double,
    val p95: Double,
    val p99: Double,
) {
    fun toJson(): Map<String, Any?> = linkedMapOf(
        "count" to count, "min" to min, "max" to max, "mean" to mean, "trimmed_mean" to trimmedMean,
        "std" to std, "cv" to cv, "p50" to p50, "p90" to p90, "p95" to p95, "p99" to p99)
}

object Stats {
    /** The statistics of [samples] (ms); non-finite values are left out; null when none is left. */
    fun latency(samples: List<Double>): LatencyStats? {
        val x = samples.filter { it.isFinite() }.sorted().toDoubleArray()
        val n = x.size
        if (n == 0) return null
        val cut = floor(0.1 * n).toInt()
        val trimmed = if (n - 2 * cut > 0) x.copyOfRange(cut, n - cut) else x
        val mean = mean(x)
        val squares = DoubleArray(n) { val d = x[it] - mean; d * d }
        val std = sqrt(pairwiseSum(squares, 0, n) / n)
        return LatencyStats(
            count = n, min = x[0], max = x[n - 1], mean = mean, trimmedMean = mean(trimmed), std = std,
            cv = if (mean > 0) std / mean else null,
            p50 = percentile(x, 50.0), p90 = percentile(x, 90.0), p95 = percentile(x, 95.0), p99 = percentile(x, 99.0))
    }

    fun mean(x: DoubleArray): Double = pairwiseSum(x, 0, x.size) / x.size

    /** numpy's summation order for float64 (pairwise, blocks of 8 below 128 values), so means match to the last bit often. */
    private fun pairwiseSum(a: DoubleArray, start: Int, n: Int): Double {
        if (n < 8) {
            var s = 0.0
            for (k in start until start + n) s += a[k]
            return s
        }
        if (n <= 128) {
            val r = DoubleArray(8) { a[start + it] }
            var k = 8
            while (k < n - (n % 8)) {
                for (j in 0 until 8) r[j] += a[start + k + j]
                k += 8
            }
            var s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
            while (k < n) { s += a[start + k]; k++ }
            return s
        }
        var half = n / 2
        half -= half % 8
        return pairwiseSum(a, start, half) + pairwiseSum(a, start + half, n - half)
    }

    /** numpy.percentile(sorted, q) with the default linear method (and numpy's lerp). */
    fun percentile(sorted: DoubleArray, q: Double): Double {
        val n = sorted.size
        val virtual = (q / 100.0) * (n - 1)
        val previous = floor(virtual)
        val lo = previous.toInt().coerceIn(0, n - 1)
        val hi = (lo + 1).coerceAtMost(n - 1)
        val gamma = virtual - previous
        val a = sorted[lo]
        val b = sorted[hi]
        val diff = b - a
        return if (gamma >= 0.5) b - diff * (1 - gamma) else a + diff * gamma
    }
}

/** The quick parity metrics of Python's `compare` (shvit_edge/parity/metrics.py) that the app shows. */
data class ParityMetrics(
    /** cosine similarity of the flattened arrays, in float64 */
    val cosine: Double,
    val maxAbs: Double,
    /** the fraction of rows whose top class agrees; a tie counts as agreement */
    val top1Agreement: Double,
    /** 10 log10(|ref|^2 / |out - ref|^2); +infinity when the arrays are equal */
    val sqnrDb: Double,
    /** no NaN or infinity in the output */
    val finite: Boolean,
    val samples: Int,
) {
    /** As JSON: non-finite values (SQNR of equal arrays, NaN metrics) as null, as Python's `as_dict`. */
    fun toJson(): Map<String, Any?> = linkedMapOf(
        "cosine" to cosine.takeIf { it.isFinite() }, "max_abs" to maxAbs.takeIf { it.isFinite() },
        "top1_agreement" to top1Agreement.takeIf { it.isFinite() }, "sqnr_db" to sqnrDb.takeIf { it.isFinite() })
}

object Parity {
    /** The metrics of [output] against [reference], both `[rows, values]` float32 in row order. */
    fun compare(output: FloatArray, reference: FloatArray, rows: Int): ParityMetrics {
        require(output.size == reference.size) { "output holds ${output.size} values; the reference ${reference.size}" }
        require(rows >= 1 && output.size % rows == 0) { "${output.size} values are not $rows rows" }
        val cols = output.size / rows
        val finite = output.all { it.isFinite() }
        if (!finite) return ParityMetrics(Double.NaN, Double.NaN, Double.NaN, 0.0, false, rows)
        var dot = 0.0
        var nOut = 0.0
        var nRef = 0.0
        var noise = 0.0
        var signal = 0.0
        var maxAbs = 0.0
        for (k in output.indices) {
            val o = output[k].toDouble()
            val r = reference[k].toDouble()
            dot += o * r
            nOut += o * o
            nRef += r * r
            val d = o - r
            noise += d * d
            signal += r * r
            if (abs(d) > maxAbs || d.isNaN()) maxAbs = abs(d)
        }
        val denom = sqrt(nOut) * sqrt(nRef)
        val cosine = if (denom > 0) dot / denom else if (output.contentEquals(reference)) 1.0 else 0.0
        val sqnr = if (noise == 0.0) Double.POSITIVE_INFINITY else 10 * log10(signal / noise)
        var agree = 0
        for (row in 0 until rows) {
            val base = row * cols
            var outMax = Double.NEGATIVE_INFINITY
            var refMax = Double.NEGATIVE_INFINITY
            var outArg = 0
            var refArg = 0
            for (c in 0 until cols) {
                val o = output[base + c].toDouble()
                val r = reference[base + c].toDouble()
                if (o > outMax) { outMax = o; outArg = c }
                if (r > refMax) { refMax = r; refArg = c }
            }
            // numpy argmax: the first maximum; a NaN in the reference makes its max NaN (no agreement that way)
            val ok = output[base + refArg].toDouble() >= outMax || reference[base + outArg].toDouble() >= refMax
            if (ok) agree++
        }
        return ParityMetrics(cosine, maxAbs, agree.toDouble() / rows, sqnr, true, rows)
    }

    /** Python's `format(value, ".{digits}g")`: trailing zeros (and a bare point) dropped. */
    fun pythonG(value: Double, digits: Int): String {
        if (!value.isFinite()) return if (value.isNaN()) "nan" else if (value > 0) "inf" else "-inf"
        val text = "%.${digits}g".format(java.util.Locale.ROOT, value)
        val e = text.indexOfFirst { it == 'e' || it == 'E' }
        val mantissa = if (e < 0) text else text.substring(0, e)
        val exponent = if (e < 0) "" else text.substring(e).lowercase()
        val trimmed = if (mantissa.contains('.')) mantissa.trimEnd('0').trimEnd('.') else mantissa
        return trimmed + exponent
    }

    /** What in [m] breaks [tolerance] (empty: passes), worded as Python's `judge` (the numeric checks only). */
    fun judge(m: ParityMetrics, tolerance: Tolerance): List<String> {
        if (!m.finite) return listOf("NaN or Inf in the output")
        val problems = ArrayList<String>()
        if (!(m.cosine >= tolerance.cosine)) problems.add("cosine ${"%.6f".format(java.util.Locale.ROOT, m.cosine)} < ${tolerance.cosine}")
        if (!(m.maxAbs <= tolerance.maxAbs)) problems.add("max abs ${pythonG(m.maxAbs, 3)} > ${tolerance.maxAbs}")
        if (!(m.top1Agreement >= tolerance.top1Agreement)) {
            problems.add("top-1 agreement ${"%.3f".format(java.util.Locale.ROOT, m.top1Agreement)} < ${tolerance.top1Agreement}")
        }
        val sqnr = tolerance.sqnrDb
        if (sqnr != null && !(m.sqnrDb >= sqnr)) problems.add("SQNR ${"%.1f".format(java.util.Locale.ROOT, m.sqnrDb)} dB < $sqnr dB")
        return problems
    }
}
