"""How long the coreml-sim interpreter takes to run one image through each SHViT variant's fp16 Core ML program
(issue 15's goal: S4 in under 2 s here, load excluded, so that verifying Core ML costs about what the other
runtimes cost).

Exports each variant (untrained, seeded: the time does not depend on the weights) for the iPhone 12 profile
(fp16, image input, classifier output) at its resolution, loads the program once (timed separately: the
coremltools import and the package read), then runs one 0-255 RGB image ``--runs`` times with the fp16 headroom
recorded (as verify runs it), and records the median and the slowest run. Writes
benchmarks/results/coreml_sim_seconds.json.

    .venv/bin/python benchmarks/coreml_sim_seconds.py [--variants shvit_s1,shvit_s4] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
GOAL_SECONDS = {"shvit_s4": 2.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="shvit_s1,shvit_s2,shvit_s3,shvit_s4")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    import numpy as np

    from shvit_edge.backends.coreml.sim import Headroom, Program, to_color_space
    from shvit_edge.export import ExportOptions, export, load_source, resolve_targets

    rows = []
    for variant in args.variants.split(","):
        source = load_source(variant=variant, checkpoint=None, seed=0)
        resolution = (source.default_resolution,) * 2
        with tempfile.TemporaryDirectory() as tmp:
            report = export(source, resolve_targets("coreml"), ExportOptions(resolution=resolution), Path(tmp),
                            jobs=1)
            (artifact,) = report.artifacts
            start = time.perf_counter()
            program = Program.load(artifact.path)
            load = time.perf_counter() - start
            (spec,) = program.inputs
            pixels = np.random.default_rng(0).integers(0, 256, (1, 3, *resolution), dtype=np.uint8)
            feed = to_color_space(pixels, spec.color_space)
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                program.run({spec.name: feed}, headroom=Headroom())
                times.append(time.perf_counter() - start)
        row = {"variant": variant, "resolution": list(resolution), "ops": len(program._steps),
               "load_seconds": round(load, 3), "run_seconds_median": round(statistics.median(times), 3),
               "run_seconds_max": round(max(times), 3)}
        goal = GOAL_SECONDS.get(variant)
        if goal is not None:
            row["goal_seconds"] = goal
            row["goal_met"] = row["run_seconds_median"] < goal
        rows.append(row)
        print(json.dumps(row))
    doc = {"benchmark": "coreml_sim_seconds", "machine": {"processor": platform.processor() or platform.machine(),
                                                         "python": platform.python_version()},
           "runs": args.runs, "results": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "coreml_sim_seconds.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
