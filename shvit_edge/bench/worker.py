"""One benchmark candidate in its own process: ``python -m shvit_edge.bench.worker SPEC``.

A process of its own per candidate, because a process's peak RSS only grows (one process timing several
runtimes would report the largest for all) and because the CPU affinity and thread settings must be in place
before a runtime starts its thread pool. ``SPEC`` (JSON) names the candidate (an artifact, or the PyTorch eager
model it is compared with), the CPUs and the thread count. The worker pins itself, loads the candidate (timed),
runs it once (the first inference, timed) and ``warmup`` more times, then answers the parent's requests, one
JSON line each way over stdin and stdout:

- ``{"run": N}`` or ``{"run_seconds": S}``: that many timed inferences (or as many as fit in S seconds, at
  least one); the answer holds each latency and the process CPU seconds the chunk took;
- ``{"gemm": N}``: the fp32 matrix-multiply rate of this process's CPUs and threads (torch, N x N);
- ``{"done": true}``: the answer holds the peak RSS, then the worker exits.

Libraries' own prints go to stderr: stdout carries the protocol only. The worker dies with its parent
(``parent_pid`` in SPEC; :func:`shvit_edge._process.die_with_parent`), and a fatal signal (a runtime's abort)
leaves the Python stack in its stderr (:mod:`faulthandler`), which the parent reads for the reason.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path


def _pin(cpus: list[int], threads: int) -> None:
    """Before any runtime is imported: these CPUs only, and every thread pool at ``threads``. Affinity is what
    holds for a runtime that ignores thread settings (ExecuTorch's XNNPACK pool); the settings keep the
    others from oversubscribing the CPUs they have."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(cpus))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)


def _import_runtime(spec: dict) -> None:
    """Import the candidate's runtime before its load is timed: ``load_ms`` is what an app pays to load a
    model into a runtime it already has, not this host's Python imports."""
    import importlib

    import numpy  # noqa: F401

    if spec["kind"] == "eager":
        importlib.import_module("torch")
        from ..models.registry import find_family

        find_family(spec.get("family") or "shvit")  # a family from outside shvit-edge: its module imported
        return
    from ..backends.registry import ensure_registered, get_backend

    ensure_registered(spec.get("backend"))  # a backend registered by the caller's own code
    for module in get_backend(spec["target"]).runtime_modules:
        importlib.import_module(module)


def _load(spec: dict):
    """(runner, input array, runtime name) of the candidate."""
    import numpy as np

    threads = spec["threads"]
    if spec["kind"] == "eager":
        import torch

        from ..models.registry import find_family

        torch.set_num_threads(threads)
        torch.manual_seed(0)  # the weights do not change the work; the architecture and class count do
        family = find_family(spec.get("family") or "shvit")
        model = family.create(spec["variant"], num_classes=spec["num_classes"], distillation=spec["distillation"])
        model = family.reparameterize(model).eval()

        def run(x):
            with torch.inference_mode():
                return model(torch.from_numpy(x)).numpy()

        shape = (spec["batch"], 3, *spec["resolution"])
        runtime = f"torch {torch.__version__.split('+')[0]} eager (fused)"
    else:
        from ..backends.registry import get_backend
        from ..manifest import manifest_path, read_manifest

        manifest = read_manifest(manifest_path(Path(spec["path"])))
        runner = get_backend(manifest.target).load(spec["path"], manifest, threads=threads)
        run, shape, runtime = runner, tuple(manifest.inputs[0].shape), runner.runtime
        if manifest.inputs[0].dtype != "float32":
            raise ValueError(f"input dtype {manifest.inputs[0].dtype} is not benchmarked")
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    return run, x, runtime


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed(run, x, count: int | None, seconds: float | None) -> dict:
    latencies = []
    cpu, start = _cpu_seconds(), time.perf_counter()
    while True:
        t = time.perf_counter()
        run(x)
        latencies.append((time.perf_counter() - t) * 1e3)
        if count is not None and len(latencies) >= count:
            break
        if seconds is not None and time.perf_counter() - start >= seconds:
            break
    return {"latencies_ms": latencies, "cpu_seconds": _cpu_seconds() - cpu,
            "wall_seconds": time.perf_counter() - start}


def _gemm_gflops(n: int) -> float:
    """Best of a few N x N fp32 matmuls with torch, in GFLOP/s (2 N^3 FLOPs each)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(10):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


#: where :mod:`faulthandler` writes: the log as it was at start (a runtime's load runs with descriptor 2
#: captured, backends/_quiet.py, and a capture is lost when the process aborts)
_crash_log = None


def main(argv: list[str] | None = None) -> None:
    global _crash_log
    spec = json.loads((argv or sys.argv[1:])[0])
    # first: never outlive the bench that started this (a timed run would go on at full CPU for its --seconds)
    from .._process import die_with_parent, peak_rss_mb

    die_with_parent(int(spec.get("parent_pid") or os.getppid()))
    import faulthandler

    _crash_log = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    faulthandler.enable(file=_crash_log)  # a runtime that aborts or crashes: its Python stack, for the parent
    protocol = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)  # a library's print must not land in the protocol

    def send(doc: dict) -> None:
        protocol.write(json.dumps(doc) + "\n")
        protocol.flush()

    _pin(spec["cpus"], spec["threads"])
    try:
        _import_runtime(spec)
        start = time.perf_counter()
        run, x, runtime = _load(spec)
        load_ms = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        run(x)
        first_ms = (time.perf_counter() - start) * 1e3
        for _ in range(spec["warmup"]):
            run(x)
    except Exception as exc:  # noqa: BLE001 - the parent reports it for this candidate
        send({"error": f"{type(exc).__name__}: {exc}"[:1000]})
        return
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    send({"ready": {"runtime": runtime, "load_ms": load_ms, "first_inference_ms": first_ms, "affinity": affinity}})
    for line in sys.stdin:
        request = json.loads(line)
        if "run" in request or "run_seconds" in request:
            send(_timed(run, x, request.get("run"), request.get("run_seconds")))
        elif "gemm" in request:
            send({"gflops": _gemm_gflops(int(request["gemm"]))})
        else:
            send({"peak_rss_mb": peak_rss_mb()})
            return


if __name__ == "__main__":
    main()
