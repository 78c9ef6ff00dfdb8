"""Seconds for `shvit-edge verify` of four S1 artifacts (Core ML, ExecuTorch, TFLite, ONNX) with the five
fixture images and 8 random inputs, in a fresh process as a user runs it (imports included).

Goal (issue 4): under 30 s on this machine. The artifacts are exported first (not timed) from the shared
fixture checkpoint; the verify run is repeated and the median reported, since this machine is noisy.
Results go to benchmarks/results/verify_seconds.json.

    .venv/bin/python benchmarks/verify_seconds.py [--repeat 3] [--out FILE]
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

GOAL_SECONDS = 30.0
FIXTURES = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures"
CLI = [sys.executable, "-m", "shvit_edge.cli"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "verify_seconds.json"))
    args = parser.parse_args()
    checkpoint, images = FIXTURES / "shvit_s1_official.pth", FIXTURES / "images"
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([*CLI, "export", "--target", "all", "--checkpoint", str(checkpoint), "--out", folder],
                       check=True, capture_output=True)
        runs = []
        for i in range(args.repeat):
            start = time.perf_counter()
            proc = subprocess.run([*CLI, "verify", folder, "--images", str(images), "--samples", "8", "--json"],
                                  capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if proc.returncode != 0:
                raise SystemExit(f"verify failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}")
            results = json.loads(proc.stdout)["results"]
            runs.append({"seconds": round(seconds, 2),
                         "statuses": {Path(r["artifact"]).name: r["status"] for r in results}})
            print(f"run {i + 1}: {seconds:.1f} s {runs[-1]['statuses']}", flush=True)
    median = statistics.median(r["seconds"] for r in runs)
    result = {
        "command": f"python benchmarks/verify_seconds.py --repeat {args.repeat}",
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "what": "shvit-edge verify <folder of 4 S1 224x224 artifacts> --images ../shared/fixtures/images "
                "--samples 8, fresh process",
        "runs": runs,
        "median_seconds": median,
        "goal": f"under {GOAL_SECONDS:.0f} s",
        "goal_met": median < GOAL_SECONDS,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"median {median:.1f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
