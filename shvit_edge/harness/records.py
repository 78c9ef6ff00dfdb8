"""One measured run, whatever tool measured it: the unit the results store keeps.

Every reader of a result (the project's own result documents, ``bench --json`` documents, and the outputs of
other benchmark tools: :mod:`shvit_edge.harness.formats`) turns what it reads into :class:`Record` values. A
record keeps what its source said and nothing it did not: a tool that reports only an average has no raw
``latencies_ms`` and its average in ``reported_ms``; a run that failed is a record with ``status`` ``failed``
and the tool's ``error``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: ``Record.meaning``: what a record's latency numbers are
IN_APP_WALL_TIME = "in-app wall time"          # timed around each inference by the app or tool on the device
HOSTED_ESTIMATE = "hosted estimate"            # a hosted service's profile of a device it runs (AI Hub)
HOST_WALL_TIME = "host wall time"              # timed on this machine (bench, the host harness)
INTERPRETED = "interpreter, not a latency"     # an interpreter's time (coreml-sim): numerics only
MEANINGS = (IN_APP_WALL_TIME, HOSTED_ESTIMATE, HOST_WALL_TIME, INTERPRETED)

OK, FAILED, SKIPPED = "ok", "failed", "skipped"


@dataclass(frozen=True)
class Record:
    """One run of one model under one runtime setting on one device, as its source reported it."""

    #: the tool that produced it: ``shvit-edge-harness``, ``shvit-edge-bench``, ``executorch-android-benchmark``,
    #: ``executorch-ios-xctest``, ``xcresulttool-metrics``, ``litert-benchmark-model``, ``litert-benchmark-proto``,
    #: ``litert-benchmark-json``, ``coremltools-benchmarker``, ``qai-hub-profile``
    source_tool: str
    #: what the latency numbers are (one of :data:`MEANINGS`)
    meaning: str
    #: :data:`OK`, :data:`FAILED` (attempted, did not complete) or :data:`SKIPPED` (the setting is not available)
    status: str = OK
    error: str | None = None
    #: the model as the source named it (a file name, a benchmark name)
    model: str | None = None
    #: the artifact's sha256 when the source gives it (only shvit-edge's own documents do): what ties the
    #: record to an artifact and its bundle's references
    artifact_sha256: str | None = None
    #: shvit-edge's backend name when known (``coreml``, ``executorch``, ``tflite``, ``onnx``, ``pytorch``)
    target: str | None = None
    runtime: str | None = None
    runtime_version: str | None = None
    #: the delegate or compute-unit setting (``xnnpack``, ``gpu``, ``cpu_and_ne`` ...)
    setting: str | None = None
    #: the device: any of ``model``, ``manufacturer``, ``os``, ``os_version``, ``soc``, ``arch``, ``app_version``
    device: dict = field(default_factory=dict)
    threads: int | None = None
    batch: int | None = None
    precision: str | None = None
    quantization: str | None = None
    load_ms: float | None = None
    first_inference_ms: float | None = None
    warmup: int | None = None
    #: every timed inference, in milliseconds, in order (empty when the source gives only statistics)
    latencies_ms: tuple[float, ...] = ()
    #: statistics the source computed itself, in milliseconds: any of ``mean``, ``median``, ``min``, ``max``,
    #: ``std``, ``p90``, ``count`` (``count`` is a number of inferences, not ms)
    reported_ms: dict = field(default_factory=dict)
    peak_memory_mb: float | None = None
    thermal_before: str | None = None
    thermal_after: str | None = None
    #: what else the source said, kept as it was (JSON-ready)
    extra: dict = field(default_factory=dict)


def latency_stats(samples) -> dict:
    """The statistics of raw per-iteration latencies (ms): p50/p90/p95/p99 (linear interpolation), mean, a 10%
    trimmed mean (10% cut from each end), standard deviation (population), CV (std / mean), min, max, count.
    Empty samples give an empty dict."""
    import numpy as np

    x = np.asarray([float(s) for s in samples], dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {}
    x.sort()
    cut = int(math.floor(0.1 * x.size))
    trimmed = x[cut:x.size - cut] if x.size - 2 * cut > 0 else x
    mean = float(x.mean())
    std = float(x.std())
    return {"count": int(x.size), "min": float(x[0]), "max": float(x[-1]), "mean": mean,
            "trimmed_mean": float(trimmed.mean()), "std": std, "cv": std / mean if mean > 0 else None,
            **{f"p{q}": float(np.percentile(x, q)) for q in (50, 90, 95, 99)}}
