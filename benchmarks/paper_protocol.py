"""The SHViT paper's CPU protocol on this machine: one thread, batch 16, throughput (images per second).

For S1-S4 at their default resolution (untrained weights: the work does not depend on them), exports batch-16
artifacts for ONNX Runtime, ExecuTorch (XNNPACK) and LiteRT, then times them with `shvit-edge bench --threads 1`
beside each variant's fused PyTorch eager model, all in one run with rounds alternating between candidates
(Core ML has no runtime off Apple hardware and is left out). Writes benchmarks/results/paper_protocol.json and
the report in benchmarks/results/paper_protocol/.

    .venv/bin/python benchmarks/paper_protocol.py [--variants shvit_s1,shvit_s2,shvit_s3,shvit_s4]
                                                  [--iterations 20] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
TARGETS = ("onnx", "executorch", "tflite")
BATCH = 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="shvit_s1,shvit_s2,shvit_s3,shvit_s4")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", default=str(RESULTS / "paper_protocol.json"))
    args = parser.parse_args()
    from shvit_edge.bench import BenchOptions, bench
    from shvit_edge.bench.report import write_report
    from shvit_edge.export import ExportOptions, export, load_source, resolve_targets
    from shvit_edge.models.variants import get_variant

    variants = args.variants.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        folders = []
        for variant in variants:
            spec = get_variant(variant)
            folder = Path(tmp) / variant
            source = load_source(variant=variant, checkpoint=None)
            options = ExportOptions(resolution=(spec.resolution, spec.resolution), batch=BATCH)
            for target in TARGETS:
                start = time.perf_counter()
                (artifact,) = export(source, resolve_targets(target), options, folder).artifacts
                print(f"exported {variant} {artifact.path.name} in {time.perf_counter() - start:.0f} s", flush=True)
            folders.append(folder)
        report = bench(folders, BenchOptions(threads=1, iterations=args.iterations, rounds=args.rounds, warmup=2),
                       progress=lambda description, done, total: print(f"  {description}", flush=True))
    doc = report.as_json()
    for row in doc["results"]:
        row["artifact"] = f"{row['variant']}/{Path(row['artifact']).name}"
    table = {}
    for row in [*doc["baselines"], *doc["results"]]:
        table.setdefault(row["variant"], {})[row["target"]] = {
            "throughput_ips": row["throughput_ips"], "ratio_to_eager": row["ratio_to_eager"], "gflops": row["gflops"]}
    ranking = {target: sorted(table, key=lambda v: -table[v][target]["throughput_ips"])
               for target in ("pytorch", *TARGETS)}
    doc["command"] = (f"python benchmarks/paper_protocol.py --variants {args.variants} --iterations {args.iterations} "
                      f"--rounds {args.rounds}")
    doc["protocol"] = {"threads": 1, "batch": BATCH, "metric": "throughput_ips (batch / mean latency)"}
    doc["throughput_table"] = table
    doc["ranking_fastest_first"] = ranking
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    write_report(doc, out.with_suffix(""))
    print(f"{'variant':10s} " + " ".join(f"{t:>12s}" for t in ("pytorch", *TARGETS)))
    for variant, row in table.items():
        print(f"{variant:10s} " + " ".join(f"{row[t]['throughput_ips']:12.1f}" for t in ("pytorch", *TARGETS)))
    print(json.dumps(ranking))
    print(f"wrote {out} and {out.with_suffix('')}/")


if __name__ == "__main__":
    main()
