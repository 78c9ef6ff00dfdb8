"""Size and latency of int8 artifacts against fp32, per runtime, on one CPU (issue 5's goals).

Exports S1 from the fixture checkpoint for ExecuTorch (XNNPACK) and TFLite, fp32 and full int8 (calibrated on
the fixture images), then times them in a child process pinned to one CPU before any runtime is imported
(ExecuTorch's XNNPACK threadpool ignores `torch.set_num_threads`; pinned, every thread it makes shares that one
CPU), with each runtime also set to one thread. fp32 and int8 runs alternate, so drift hits both alike; the
median of the rounds is reported. Goals: int8 at most 0.35x the fp32 size and 0.6x its latency.

    .venv/bin/python benchmarks/quantized_latency.py [--targets executorch,tflite] [--rounds 7] [--iterations 30]
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

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT.parent / "shared" / "fixtures"
GOALS = {"size_ratio": 0.35, "latency_ratio": 0.6}


def export_pair(target: str, folder: Path) -> dict:
    from shvit_edge.export import ExportOptions, export, load_source, resolve_targets

    source = load_source(variant=None, checkpoint=str(FIXTURES / "shvit_s1_official.pth"))
    paths = {}
    for label, options in (("fp32", ExportOptions(resolution=(224, 224))),
                           ("int8", ExportOptions(resolution=(224, 224), quantize="int8",
                                                  calibration=str(FIXTURES / "images")))):
        start = time.perf_counter()
        (artifact,) = export(source, resolve_targets(target), options, folder / label).artifacts
        paths[label] = {"path": str(artifact.path), "size_bytes": artifact.size_bytes,
                        "export_seconds": round(time.perf_counter() - start, 1)}
        print(f"{target} {label}: {artifact.size_bytes / 1e6:.1f} MB in {paths[label]['export_seconds']} s",
              flush=True)
    return paths


def time_pinned(paths: dict, rounds: int, iterations: int, cpu: int) -> dict:
    """Runs in a child: pin, then load both artifacts and time them alternately."""
    os.sched_setaffinity(0, {cpu})
    import numpy as np

    from shvit_edge.backends.base import get_backend
    from shvit_edge.manifest import manifest_path, read_manifest

    runners, inputs = {}, {}
    for label, info in paths.items():
        manifest = read_manifest(manifest_path(Path(info["path"])))
        runners[label] = get_backend(manifest.target).load(info["path"], manifest, threads=1)
        inputs[label] = np.random.default_rng(0).standard_normal(manifest.inputs[0].shape, dtype=np.float32)
        for _ in range(5):  # warm-up
            runners[label](inputs[label])
    medians: dict[str, list[float]] = {label: [] for label in paths}
    for _ in range(rounds):
        for label, runner in runners.items():
            times = []
            for _ in range(iterations):
                start = time.perf_counter()
                runner(inputs[label])
                times.append((time.perf_counter() - start) * 1e3)
            medians[label].append(statistics.median(times))
    return {"runtime": {label: r.runtime for label, r in runners.items()},
            "latency_ms": {label: round(statistics.median(m), 3) for label, m in medians.items()},
            "rounds_ms": {label: [round(v, 3) for v in m] for label, m in medians.items()},
            "affinity": sorted(os.sched_getaffinity(0))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default="executorch,tflite")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--cpu", type=int, default=0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "quantized_latency.json"))
    args = parser.parse_args()
    if args.child:  # the pinned timing process
        print(json.dumps(time_pinned(json.loads(args.child), args.rounds, args.iterations, args.cpu)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for target in args.targets.split(","):
            paths = export_pair(target, Path(folder) / target)
            child = subprocess.run([sys.executable, __file__, "--child", json.dumps(paths), "--rounds",
                                    str(args.rounds), "--iterations", str(args.iterations), "--cpu", str(args.cpu)],
                                   capture_output=True, text=True)
            if child.returncode != 0:
                raise SystemExit(f"timing {target} failed:\n{child.stderr[-3000:]}")
            timing = json.loads(child.stdout.strip().splitlines()[-1])
            size_ratio = paths["int8"]["size_bytes"] / paths["fp32"]["size_bytes"]
            latency_ratio = timing["latency_ms"]["int8"] / timing["latency_ms"]["fp32"]
            rows.append({"target": target, "artifacts": paths, **timing,
                         "size_ratio": round(size_ratio, 3), "latency_ratio": round(latency_ratio, 3),
                         "goals_met": {"size": size_ratio <= GOALS["size_ratio"],
                                       "latency": latency_ratio <= GOALS["latency_ratio"]}})
            print(f"{target}: size {size_ratio:.3f}x, latency {timing['latency_ms']['fp32']:.2f} -> "
                  f"{timing['latency_ms']['int8']:.2f} ms ({latency_ratio:.3f}x) on CPU {timing['affinity']}",
                  flush=True)
    result = {
        "command": f"python benchmarks/quantized_latency.py --targets {args.targets} --rounds {args.rounds} "
                   f"--iterations {args.iterations}",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "pinned_cpu": args.cpu},
        "model": "shvit_s1 from shared/fixtures/shvit_s1_official.pth, 224x224, batch 1; int8 calibrated on "
                 "shared/fixtures/images",
        "goals": GOALS,
        "results": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
