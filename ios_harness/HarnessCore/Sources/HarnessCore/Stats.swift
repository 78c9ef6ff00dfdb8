// Mirror of Stats.kt.
import Foundation

/// Latency statistics, equal (to 1e-9) to Python's `latency_stats` (shvit_edge/harness/records.py). For the app's
/// own screen only: the host computes its own from `latencies_ms`.
public struct LatencyStats: Equatable {
    public let count: Int
    public let min: Double
    public let max: Double
    public let mean: Double
    /// the mean after cutting floor(10%) of the values from each end
    public let trimmedMean: Double
    /// population standard deviation
    public let std: Double
    /// std / mean; nil when mean <= 0
    public let cv: Double?
    public let p50: Double
    public let p90: Double
    public let p95: Double
    public let p99: Double

    public func toJson() -> JsonObject {
        JsonObject([
            "count": .int(Int64(count)), "min": .double(min), "max": .double(max), "mean": .double(mean),
            "trimmed_mean": .double(trimmedMean), "std": .double(std), "cv": cv.map { JsonValue.double($0) } ?? JsonValue.null,
            "p50": .double(p50), "p90": .double(p90), "p95": .double(p95), "p99": .double(p99),
        ])
    }
}

public enum Stats {
    /// The statistics of `samples` (ms); non-finite values are left out; nil when none is left.
    public static func latency(_ samples: [Double]) -> LatencyStats? {
        let x = samples.filter { $0.isFinite }.sorted()
        let n = x.count
        if n == 0 { return nil }
        let cut = Int((0.1 * Double(n)).rounded(.down))
        let trimmed = n - 2 * cut > 0 ? Array(x[cut..<(n - cut)]) : x
        let mean = self.mean(x)
        let squares = x.map { v -> Double in
            let d = v - mean
            return d * d
        }
        let std = (pairwiseSum(squares, 0, n) / Double(n)).squareRoot()
        return LatencyStats(
            count: n, min: x[0], max: x[n - 1], mean: mean, trimmedMean: self.mean(trimmed), std: std,
            cv: mean > 0 ? std / mean : nil,
            p50: percentile(x, 50.0), p90: percentile(x, 90.0), p95: percentile(x, 95.0), p99: percentile(x, 99.0))
    }

    public static func mean(_ x: [Double]) -> Double { pairwiseSum(x, 0, x.count) / Double(x.count) }

    /// numpy's summation order for float64 (pairwise, blocks of 8 below 128 values), so means match to the last bit often.
    private static func pairwiseSum(_ a: [Double], _ start: Int, _ n: Int) -> Double {
        if n < 8 {
            var s = 0.0
            for k in start..<(start + n) { s += a[k] }
            return s
        }
        if n <= 128 {
            var r = (0..<8).map { a[start + $0] }
            var k = 8
            while k < n - (n % 8) {
                for j in 0..<8 { r[j] += a[start + k + j] }
                k += 8
            }
            var s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
            while k < n {
                s += a[start + k]
                k += 1
            }
            return s
        }
        var half = n / 2
        half -= half % 8
        return pairwiseSum(a, start, half) + pairwiseSum(a, start + half, n - half)
    }

    /// numpy.percentile(sorted, q) with the default linear method (and numpy's lerp).
    public static func percentile(_ sorted: [Double], _ q: Double) -> Double {
        let n = sorted.count
        let virtual = (q / 100.0) * Double(n - 1)
        let previous = virtual.rounded(.down)
        let lo = Swift.min(Swift.max(Int(previous), 0), n - 1)
        let hi = Swift.min(lo + 1, n - 1)
        let gamma = virtual - previous
        let a = sorted[lo]
        let b = sorted[hi]
        let diff = b - a
        return gamma >= 0.5 ? b - diff * (1 - gamma) : a + diff * gamma
    }
}

/// The quick parity metrics of Python's `compare` (shvit_edge/parity/metrics.py) that the app shows.
public struct ParityMetrics: Equatable {
    /// cosine similarity of the flattened arrays, in float64
    public let cosine: Double
    public let maxAbs: Double
    /// the fraction of rows whose top class agrees; a tie counts as agreement
    public let top1Agreement: Double
    /// 10 log10(|ref|^2 / |out - ref|^2); +infinity when the arrays are equal
    public let sqnrDb: Double
    /// no NaN or infinity in the output
    public let finite: Bool
    public let samples: Int

    /// As JSON: non-finite values (SQNR of equal arrays, NaN metrics) as null, as Python's `as_dict`.
    public func toJson() -> JsonObject {
        func finiteOrNull(_ v: Double) -> JsonValue { v.isFinite ? .double(v) : .null }
        return JsonObject([
            "cosine": finiteOrNull(cosine), "max_abs": finiteOrNull(maxAbs),
            "top1_agreement": finiteOrNull(top1Agreement), "sqnr_db": finiteOrNull(sqnrDb),
        ])
    }
}

public enum Parity {
    /// The metrics of `output` against `reference`, both `[rows, values]` float32 in row order.
    public static func compare(_ output: [Float], _ reference: [Float], _ rows: Int) -> ParityMetrics {
        precondition(output.count == reference.count, "output holds \(output.count) values; the reference \(reference.count)")
        precondition(rows >= 1 && output.count % rows == 0, "\(output.count) values are not \(rows) rows")
        let cols = output.count / rows
        let finite = output.allSatisfy { $0.isFinite }
        if !finite { return ParityMetrics(cosine: .nan, maxAbs: .nan, top1Agreement: .nan, sqnrDb: 0.0, finite: false, samples: rows) }
        var dot = 0.0
        var nOut = 0.0
        var nRef = 0.0
        var noise = 0.0
        var signal = 0.0
        var maxAbs = 0.0
        for k in output.indices {
            let o = Double(output[k])
            let r = Double(reference[k])
            dot += o * r
            nOut += o * o
            nRef += r * r
            let d = o - r
            noise += d * d
            signal += r * r
            if abs(d) > maxAbs || d.isNaN { maxAbs = abs(d) }
        }
        let denom = nOut.squareRoot() * nRef.squareRoot()
        // Kotlin's FloatArray.contentEquals compares bit patterns
        let cosine = denom > 0 ? dot / denom
            : (zip(output, reference).allSatisfy { $0.bitPattern == $1.bitPattern } ? 1.0 : 0.0)
        let sqnr = noise == 0.0 ? Double.infinity : 10 * log10(signal / noise)
        var agree = 0
        for row in 0..<rows {
            let base = row * cols
            var outMax = -Double.infinity
            var refMax = -Double.infinity
            var outArg = 0
            var refArg = 0
            for c in 0..<cols {
                let o = Double(output[base + c])
                let r = Double(reference[base + c])
                if o > outMax { outMax = o; outArg = c }
                if r > refMax { refMax = r; refArg = c }
            }
            // numpy argmax: the first maximum; a NaN in the reference makes its max NaN (no agreement that way)
            let ok = Double(output[base + refArg]) >= outMax || Double(reference[base + outArg]) >= refMax
            if ok { agree += 1 }
        }
        return ParityMetrics(cosine: cosine, maxAbs: maxAbs, top1Agreement: Double(agree) / Double(rows), sqnrDb: sqnr,
                             finite: true, samples: rows)
    }

    /// Python's `format(value, ".{digits}g")`: trailing zeros (and a bare point) dropped. (C's %g, which
    /// String(format:) is, already writes exactly that: `2`, `0.1`, `1.23e-05`.)
    public static func pythonG(_ value: Double, _ digits: Int) -> String {
        if !value.isFinite { return value.isNaN ? "nan" : (value > 0 ? "inf" : "-inf") }
        return String(format: "%.\(digits)g", value)
    }

    /// What in `m` breaks `tolerance` (empty: passes), worded as Python's `judge` (the numeric checks only).
    public static func judge(_ m: ParityMetrics, _ tolerance: Tolerance) -> [String] {
        if !m.finite { return ["NaN or Inf in the output"] }
        var problems: [String] = []
        if !(m.cosine >= tolerance.cosine) {
            problems.append("cosine \(String(format: "%.6f", m.cosine)) < \(Json.kotlinDouble(tolerance.cosine))")
        }
        if !(m.maxAbs <= tolerance.maxAbs) {
            problems.append("max abs \(pythonG(m.maxAbs, 3)) > \(Json.kotlinDouble(tolerance.maxAbs))")
        }
        if !(m.top1Agreement >= tolerance.top1Agreement) {
            problems.append("top-1 agreement \(String(format: "%.3f", m.top1Agreement)) < \(Json.kotlinDouble(tolerance.top1Agreement))")
        }
        if let sqnr = tolerance.sqnrDb, !(m.sqnrDb >= sqnr) {
            problems.append("SQNR \(String(format: "%.1f", m.sqnrDb)) dB < \(Json.kotlinDouble(sqnr)) dB")
        }
        return problems
    }
}
