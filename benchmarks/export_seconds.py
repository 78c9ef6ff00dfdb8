"""Export seconds per target for S1 and S4 (untrained weights: conversion time does not depend on them).

Each variant is exported to all four targets in one process, as `shvit-edge export --target all` does, so
the shared torch.export capture is counted once. Results go to benchmarks/results/export_seconds.json.

    .venv/bin/python benchmarks/export_seconds.py [--variants shvit_s1,shvit_s4] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from shvit_edge.export import ExportOptions, export, load_source, resolve_targets
from shvit_edge.models.variants import get_variant

GOAL_S4_ALL_TARGETS_SECONDS = 60.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="shvit_s1,shvit_s4")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "export_seconds.json"))
    args = parser.parse_args()
    rows = []
    for name in args.variants.split(","):
        spec = get_variant(name)
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            source = load_source(variant=name, checkpoint=None)
            load = time.perf_counter() - start
            res = (spec.resolution, spec.resolution)
            report = export(source, resolve_targets("all"), ExportOptions(resolution=res), folder)
            total = time.perf_counter() - start
        for a in report.artifacts:
            rows.append({"variant": name, "resolution": list(res), "target": a.target, "seconds": round(a.seconds, 2),
                         "size_bytes": a.size_bytes})
        for f in report.failures:
            rows.append({"variant": name, "target": f.target, "error": f.message})
        rows.append({"variant": name, "target": "all", "seconds": round(total, 2), "model_seconds": round(load, 2)})
        print(f"{name}: " + ", ".join(f"{r['target']} {r.get('seconds', 'FAILED')}s" for r in rows
                                       if r["variant"] == name))
    result = {
        "command": "python benchmarks/export_seconds.py --variants " + args.variants,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "goal": f"all four targets of shvit_s4 in under {GOAL_S4_ALL_TARGETS_SECONDS:.0f} s",
        "results": rows,
    }
    s4_all = [r["seconds"] for r in rows if r["variant"] == "shvit_s4" and r["target"] == "all"]
    if s4_all:
        result["goal_met"] = s4_all[0] < GOAL_S4_ALL_TARGETS_SECONDS
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
