"""Host latency of S1's artifacts against fused PyTorch eager, one thread, batch 1 (issue 6's goals).

Exports S1 from the fixture checkpoint at 224 for ExecuTorch (XNNPACK), LiteRT and ONNX Runtime, fp32 and int8
(calibrated on the fixture images; each verified against fp32 at export), verifies the fp32 ones on the same
images (so every manifest holds its accuracy), then runs `shvit-edge bench` on all of them with one thread:
each candidate in its own process pinned to one CPU, rounds alternating. Writes the result document to
benchmarks/results/host_latency_s1.json and the report (markdown, HTML, plots) to
benchmarks/results/host_latency_s1/.

Goals: fp32 ExecuTorch at or below 0.7x eager, ONNX Runtime and LiteRT at or below 0.5x; and each runtime's
achieved GFLOP/s next to the machine's fp32 GEMM peak.

    .venv/bin/python benchmarks/host_latency.py [--iterations 200] [--rounds 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT.parent / "shared" / "fixtures"
RESULTS = Path(__file__).parent / "results"
GOALS = {"executorch": 0.7, "onnx": 0.5, "tflite": 0.5}
INT8 = {"executorch": "int8", "tflite": "int8", "onnx": "int8"}


def export_all(folder: Path) -> None:
    from shvit_edge.export import ExportOptions, load_source, resolve_targets
    from shvit_edge.pipeline import export
    from shvit_edge.verify import VerifyOptions, verify

    source = load_source(variant=None, checkpoint=str(FIXTURES / "shvit_s1_official.pth"))
    fp32 = []
    for target, mode in INT8.items():
        for quantize in (None, mode):
            start = time.perf_counter()
            options = ExportOptions(resolution=(224, 224), quantize=quantize,
                                    calibration=str(FIXTURES / "images") if quantize else None)
            # as `shvit-edge export --quantize` does: a quantized artifact is verified against fp32 (on the
            # calibration images), and its manifest records the result
            (artifact,) = export(source, resolve_targets(target), options, folder).artifacts
            print(f"exported {artifact.path.name} in {time.perf_counter() - start:.0f} s", flush=True)
            if quantize is None:
                fp32.append(artifact.path)
    verify(fp32, VerifyOptions(images=str(FIXTURES / "images"), samples=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS / "host_latency_s1.json"))
    args = parser.parse_args()
    from shvit_edge.bench import BenchOptions, bench
    from shvit_edge.bench.report import write_report

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "s1"
        export_all(folder)
        report = bench([folder], BenchOptions(threads=args.threads, iterations=args.iterations, rounds=args.rounds,
                                              warmup=20),
                       progress=lambda description, done, total: print(f"  {description}", flush=True))
    doc = report.as_json()
    for row in doc["results"]:  # the artifacts lived in a temporary folder: keep their names only
        row["artifact"] = Path(row["artifact"]).name
    peak = doc["machine"]["fp32_gemm_peak_gflops"]
    goals = {}
    for row in doc["results"]:
        if row["quantization"] is None and row["target"] in GOALS:
            goals[row["target"]] = {"ratio_to_eager": row["ratio_to_eager"], "goal": GOALS[row["target"]],
                                    "met": row["ratio_to_eager"] <= GOALS[row["target"]],
                                    "fraction_of_gemm_peak": row.get("fraction_of_gemm_peak")}
    doc["command"] = (f"python benchmarks/host_latency.py --iterations {args.iterations} --rounds {args.rounds} "
                      f"--threads {args.threads}")
    doc["goals"] = goals
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    write_report(doc, out.with_suffix(""))
    print(f"eager {doc['baseline']['latency_ms']['p50']:.2f} ms; GEMM peak {peak} GFLOP/s")
    for row in doc["results"]:
        print(f"{row['artifact']:40s} {row['latency_ms']['p50']:7.2f} ms  {row['ratio_to_eager']:.3f}x eager  "
              f"{row['gflops']:6.1f} GFLOP/s ({row.get('fraction_of_gemm_peak')})")
    print(json.dumps(goals, indent=2))
    print(f"wrote {out} and {out.with_suffix('')}/")


if __name__ == "__main__":
    main()
