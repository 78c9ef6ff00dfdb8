"""Export seconds per target for S1 and S4, as a user meets them: `shvit-edge export --target all` in a fresh
process (imports included), untrained weights (conversion time does not depend on them).

For each variant: one run with `--jobs 1` (every target in one process, one after another: the per-target
seconds) and `--repeat` runs with `--jobs auto` (the parallel export, one lane per CPU), whose median wall time
is the number the goal is about. This machine's run-to-run noise is large (+-10 s on a minute), hence the
repeats. Results go to benchmarks/results/export_seconds.json.

    .venv/bin/python benchmarks/export_seconds.py [--variants shvit_s1,shvit_s4] [--repeat 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_S4_ALL_TARGETS_SECONDS = 60.0
CLI = [sys.executable, "-m", "shvit_edge.cli"]


def run(variant: str, jobs: str) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        proc = subprocess.run([*CLI, "export", "--target", "all", "--variant", variant, "--jobs", jobs,
                               "--out", folder, "--json"], capture_output=True, text=True)
        wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"export failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    doc = json.loads(proc.stdout)
    return {"wall_seconds": round(wall, 2),
            "targets": {a["target"]: {"seconds": round(a["seconds"], 2), "size_bytes": a["size_bytes"]}
                        for a in doc["artifacts"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="shvit_s1,shvit_s4")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "export_seconds.json"))
    args = parser.parse_args()
    from shvit_edge.export import usable_cpus

    rows = []
    for variant in args.variants.split(","):
        sequential = run(variant, "1")
        print(f"{variant} --jobs 1: {sequential['wall_seconds']} s "
              + ", ".join(f"{t} {r['seconds']} s" for t, r in sequential["targets"].items()), flush=True)
        parallel = []
        for i in range(args.repeat):
            parallel.append(run(variant, "auto"))
            print(f"{variant} --jobs auto run {i + 1}: {parallel[-1]['wall_seconds']} s", flush=True)
        walls = [p["wall_seconds"] for p in parallel]
        rows.append({"variant": variant, "sequential": sequential, "parallel_runs": parallel,
                     "parallel_wall_seconds": {"median": statistics.median(walls), "min": min(walls),
                                               "max": max(walls)}})
    result = {
        "command": f"python benchmarks/export_seconds.py --variants {args.variants} --repeat {args.repeat}",
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "usable_cpus": usable_cpus(), "jobs_auto": usable_cpus()},
        "goal": f"all four targets of shvit_s4 in under {GOAL_S4_ALL_TARGETS_SECONDS:.0f} s",
        "results": rows,
    }
    s4 = [r for r in rows if r["variant"] == "shvit_s4"]
    if s4:
        result["goal_met"] = s4[0]["parallel_wall_seconds"]["median"] < GOAL_S4_ALL_TARGETS_SECONDS
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
