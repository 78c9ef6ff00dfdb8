"""One artifact under one runtime setting, run as a harness app runs it: ``python -m shvit_edge.harness.worker SPEC``.

The host harness (:mod:`shvit_edge.harness.host`) starts one such process per run, so a runtime that aborts costs
that run, not the harness, and the peak memory is this run's own. ``SPEC`` is a JSON file: ``parent_pid``,
``artifact``, ``setting`` (the runtime setting :meth:`~shvit_edge.backends.base.Backend.load` takes, or null),
``threads``, ``warmup``, ``iterations``, ``inputs`` (a ``.npy`` of the bundle's input tensor), ``outputs``
(where the outputs go, ``.npy``) and ``status`` (where this process writes its JSON result).

The protocol, the one the apps follow: import the runtime; load the artifact (timed: ``load_ms``); run the first
batch once (``first_inference_ms``); ``warmup`` more runs; then ``iterations`` timed runs, one batch each,
cycling through the input tensor's batches; finally one untimed pass over every batch for the outputs.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def _thermal() -> str | None:
    """The hottest thermal zone's temperature (Linux), e.g. ``48.0 C``; None where there is none to read."""
    temps = []
    for zone in Path("/sys/class/thermal").glob("thermal_zone*/temp"):
        try:
            temps.append(int(zone.read_text().strip()) / 1000)
        except (OSError, ValueError):
            continue
    return f"{max(temps):.1f} C" if temps else None


def run(spec: dict) -> dict:
    import numpy as np

    from .._process import peak_rss_mb
    from ..backends.registry import ensure_registered, get_backend
    from ..manifest import manifest_path, read_manifest
    from .bundle import batches

    os.environ.setdefault("OMP_NUM_THREADS", str(spec["threads"]))
    artifact = Path(spec["artifact"])
    manifest = read_manifest(manifest_path(artifact))
    ensure_registered(spec.get("backend"))
    backend = get_backend(manifest.target)
    backend.import_runtime()
    x = np.load(spec["inputs"])
    chunks = [chunk for chunk, _ in batches(x, manifest)]
    result = {"thermal_before": _thermal()}
    start = time.perf_counter()
    runner = backend.load(str(artifact), manifest, threads=spec["threads"], setting=spec["setting"])
    result["load_ms"] = (time.perf_counter() - start) * 1e3
    result["runtime"] = runner.runtime
    start = time.perf_counter()
    runner(chunks[0])
    result["first_inference_ms"] = (time.perf_counter() - start) * 1e3
    for i in range(spec["warmup"]):
        runner(chunks[i % len(chunks)])
    latencies = []
    for i in range(spec["iterations"]):
        chunk = chunks[i % len(chunks)]
        t = time.perf_counter()
        runner(chunk)
        latencies.append((time.perf_counter() - t) * 1e3)
    result["latencies_ms"] = latencies
    outputs = np.concatenate([np.asarray(runner(chunk), dtype=np.float32) for chunk in chunks])[:x.shape[0]]
    np.save(spec["outputs"], outputs.reshape(outputs.shape[0], -1))
    result["peak_memory_mb"] = peak_rss_mb()
    result["thermal_after"] = _thermal()
    if runner.report is not None:
        result["details"] = runner.report()
    return result


def main(argv: list[str] | None = None) -> None:
    spec = json.loads(Path((argv or sys.argv[1:])[0]).read_text(encoding="utf-8"))
    from .._process import die_with_parent

    die_with_parent(int(spec["parent_pid"]))
    import faulthandler

    faulthandler.enable()
    from ..errors import describe_exception

    try:
        result = run(spec)
    except Exception as exc:  # noqa: BLE001 - the run's failure is its result
        result = {"error": describe_exception(exc)}
    status = Path(spec["status"])
    tmp = status.with_name(status.name + ".tmp")
    tmp.write_text(json.dumps(result, allow_nan=False, default=str), encoding="utf-8")
    os.replace(tmp, status)


if __name__ == "__main__":
    main()
