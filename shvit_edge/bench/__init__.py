"""Bench: host latency of artifacts in the runtimes that ship them, side by side with PyTorch eager.

:func:`bench` is the library entry point behind ``shvit-edge bench``. Every candidate (each artifact, and per
model configuration the fused PyTorch eager model as baseline) runs in a worker process of its own
(:mod:`shvit_edge.bench.worker`), pinned to the same ``threads`` CPUs with each runtime's own thread setting at
``threads``. The workers are started and loaded one after another, then timed in rounds that alternate between
them, so a drift of the machine hits every candidate alike; latencies of all rounds are pooled. Absolute
times on a shared machine drift by tens of percent between runs; ``ratio_to_eager``, measured in the same run,
is the number that carries over.

The result is one document (:meth:`BenchReport.as_json`) in the schema ``shvit_edge/schemas/bench.schema.json``,
the one the device harnesses write too.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import __version__
from .._process import signal_name
from ..bounds import ITERATIONS, ROUNDS, SECONDS, THREADS, WARMUP
from ..errors import InputError, UsageError

SCHEMA_VERSION = 1
#: the matrix size of the fp32 GEMM that measures the machine's peak (the roofline's ceiling)
GEMM_SIZE = 1024
#: timed inferences per candidate when neither --iterations nor --seconds is given
DEFAULT_ITERATIONS = 50
#: a result's ``verify.status`` when the manifest's verify result is of another file (the artifact changed)
STALE = "stale"


@dataclass(frozen=True)
class BenchOptions:
    threads: int = 1
    warmup: int = 10
    #: timed inferences per candidate, or instead ``seconds`` of them; both split evenly over ``rounds``
    iterations: int | None = None
    seconds: float | None = None
    rounds: int = 5
    baseline: bool = True
    #: every worker stays loaded for the whole run (True), or each is started, timed and stopped within each
    #: round (False): for many candidates (benchmarks/compare.py's dozens of models) whose resident workers
    #: would not fit in memory together. Rounds still alternate; loading and warm-up repeat each round untimed
    #: (``load_ms`` and ``first_inference_ms`` are the first round's, ``peak_rss_mb`` the largest)
    resident: bool = True

    def round_request(self, round_: int) -> dict | None:
        """What a worker is asked for in round ``round_`` (None: nothing this round). Iterations are split so
        they add up to exactly ``iterations``."""
        if self.seconds is not None:
            return {"run_seconds": self.seconds / self.rounds}
        total = self.iterations or DEFAULT_ITERATIONS
        count = total // self.rounds + (1 if round_ < total % self.rounds else 0)
        return {"run": count} if count else None


@dataclass
class Candidate:
    """One thing to time: an artifact (``manifest`` set) or the eager baseline of a model configuration."""

    label: str
    target: str
    spec: dict
    config: tuple
    macs: int
    batch: int
    manifest: object = None
    process: subprocess.Popen | None = None
    ready: dict = field(default_factory=dict)
    latencies: list = field(default_factory=list)
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    peak_rss_mb: float | None = None
    error: str | None = None
    log: object = None
    #: the artifact file's sha256 when the run was planned (None for the eager baseline)
    artifact_sha256: str | None = None


@dataclass(frozen=True)
class BenchReport:
    machine: dict
    settings: dict
    baselines: tuple[dict, ...]
    results: tuple[dict, ...]
    skipped: tuple[dict, ...]
    failures: tuple[dict, ...]

    def as_json(self) -> dict:
        return {"schema_version": SCHEMA_VERSION, "shvit_edge_version": __version__, "machine": self.machine,
                "settings": self.settings, "baseline": self.baselines[0] if self.baselines else None,
                "baselines": list(self.baselines), "results": list(self.results), "skipped": list(self.skipped),
                "failures": list(self.failures)}


#: progress(what is happening, steps done, steps in this phase)
Progress = Callable[[str, int, int], None]


def usable_cpus() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def check_options(options: BenchOptions) -> None:
    """Every setting within its declared range (:mod:`shvit_edge.bounds`; NaN and infinities never are), and
    ``threads`` within the CPUs this process may use: a :class:`UsageError` naming the option otherwise."""
    threads, cpus = options.threads, usable_cpus()
    if isinstance(threads, int) and not isinstance(threads, bool) and \
            not 1 <= threads <= min(len(cpus), THREADS.hi):
        limit = f"the {len(cpus)} CPUs this process may use" if len(cpus) <= THREADS.hi else f"{THREADS.hi:g}"
        raise UsageError(f"--threads must be between 1 and {limit}, got {threads}")
    THREADS.check("--threads", threads)  # what is not a whole number
    WARMUP.check("--warmup", options.warmup)
    ROUNDS.check("--rounds", options.rounds)
    if options.iterations is not None:
        ITERATIONS.check("--iterations", options.iterations)
    if options.seconds is not None:
        SECONDS.check("--seconds", options.seconds)
    if options.iterations is not None and options.seconds is not None:
        raise UsageError("give --iterations or --seconds, not both")


def _macs(manifest) -> int:
    """MACs of one image through the deploy model (the work every runtime does, whatever it fuses): recorded in
    the manifest at export; for a manifest from before that, measured on a model the family builds."""
    if manifest.macs is not None:
        return manifest.macs
    from ..models.registry import find_family, measure

    return measure(find_family(manifest.family), manifest.variant, manifest.num_classes,
                   tuple(manifest.resolution))["macs"]


def plan(paths, options: BenchOptions) -> tuple[list[Candidate], list[dict]]:
    """The candidates (artifacts, then one eager baseline per model configuration) and the artifacts skipped
    (with why: a runtime this machine does not have)."""
    from ..artifacts import find_artifacts
    from ..atomic import sha256_of
    from ..backends.registry import get_backend, origin, require
    from ..manifest import manifest_path, read_manifest

    cpus = usable_cpus()[:options.threads]
    artifacts = find_artifacts(paths)
    macs: dict = {}
    candidates, skipped, configs, families = [], [], {}, {}
    for path in artifacts:
        manifest = read_manifest(manifest_path(path))
        require(manifest.target)
        backend = get_backend(manifest.target)
        why_not = backend.cannot_run_here(path, manifest)
        if why_not is None and manifest.inputs[0].dtype != "float32":
            why_not = f"its input is {manifest.inputs[0].dtype}; bench feeds float32 tensors"
        if why_not is not None:
            skipped.append({"artifact": str(path), "target": manifest.target, "reason": why_not})
            continue
        try:  # a FIFO or device is refused here: a runtime reading it would block the run for good
            digest = sha256_of(path)
        except (InputError, OSError) as exc:
            candidates.append(Candidate(label=str(path), target=manifest.target, spec={}, config=None, macs=0,
                                        batch=manifest.batch, manifest=manifest,
                                        error=f"not run: {exc}"))
            continue
        h, w = manifest.resolution
        config = (manifest.variant, manifest.num_classes, manifest.distillation, (h, w), manifest.batch)
        key = (manifest.variant, manifest.num_classes, (h, w))
        if key not in macs:
            macs[key] = _macs(manifest)
        families.setdefault(config, manifest.family)
        configs.setdefault(config, macs[key])
        candidates.append(Candidate(label=str(path), target=manifest.target, config=config, macs=macs[key],
                                    batch=manifest.batch, manifest=manifest, artifact_sha256=digest,
                                    spec={"kind": "artifact", "path": str(path), "target": manifest.target,
                                          "backend": origin(manifest.target),
                                          "threads": options.threads,
                                          "cpus": cpus, "warmup": options.warmup}))
    if options.baseline:
        from ..models.registry import family_ref, find_family

        for config, config_macs in configs.items():
            variant, num_classes, distillation, (h, w), batch = config
            candidates.append(Candidate(
                label=f"eager:{variant}@{h}x{w}" + (f":b{batch}" if batch != 1 else ""), target="pytorch",
                config=config, macs=config_macs, batch=batch,
                spec={"kind": "eager", "family": family_ref(find_family(families[config])), "variant": variant,
                      "num_classes": num_classes,
                      "distillation": distillation, "resolution": [h, w], "batch": batch,
                      "threads": options.threads, "cpus": cpus, "warmup": options.warmup}))
    return candidates, skipped


#: how much of a dead worker's log is searched for why it died
_LOG_TAIL = 64 * 1024
#: a line of a log that says what went wrong (C++ aborts and asserts, Python errors, glog's E and F lines)
_ERROR_LINE = re.compile(r"error|exception|abort|fatal|terminate|segmentation fault|assert|what\(\)|panic|"
                         r"out of memory|^\s*\[?[EF]\d{4} ", re.IGNORECASE)
#: a line that only warns (Python warnings, glog's and c10's W and I lines): never quoted as the reason, even
#: when it mentions an error ("... will be an error in a future release")
_WARNING_LINE = re.compile(r"warn|deprecat|^\s*\[?[WI]\d{4} ", re.IGNORECASE)
#: stack frames and faulthandler's module list: a path or module name is no message
_NOT_MESSAGES = ('File "', "Extension modules:")


def worker_ended(returncode: int, log: str) -> str:
    """Why a worker ended without answering: how the process ended (its exit code, or the signal that killed
    it), then the log's last lines that look like an error, if any. A warning is never taken for the reason
    (the last line of a dead worker's log is often a library's warning from long before it died)."""
    if returncode is not None and returncode < 0:
        how = f"was killed by {signal_name(-returncode)}"
    else:
        how = f"exited with code {returncode}"
    lines = [line.strip() for line in log.splitlines()]
    errors = [line for line in lines if line and _ERROR_LINE.search(line) and not _WARNING_LINE.search(line)
              and not line.startswith(_NOT_MESSAGES)]
    quoted = list(dict.fromkeys(errors[-2:]))
    where = _crash_frame(lines)
    message = f"the benchmark process {how}"
    if quoted:
        message += ": " + " / ".join(quoted)
    if where:
        message += f"; at {where}"
    if not quoted and not where:
        message += " (its log holds no error message)"
    return message[:1500]


def _crash_frame(lines: list[str]) -> str | None:
    """The innermost Python frame of the current thread in a fatal-signal dump (the worker enables
    :mod:`faulthandler`), e.g. ``load_program (executorch/runtime/__init__.py:333)``."""
    heads = [i for i, line in enumerate(lines) if line.endswith("(most recent call first):")]
    current = [i for i in heads if lines[i].startswith("Current thread")]
    if not heads:
        return None
    start = (current or heads)[-1]
    for frame in lines[start + 1:start + 3]:
        m = re.match(r'File "(.+)", line (\d+) in (\S+)', frame)
        if m:
            return f"{m.group(3)} ({m.group(1).split('site-packages/', 1)[-1]}:{m.group(2)})"
    return None


class _Worker:
    """The parent's end of one worker process."""

    @staticmethod
    def start(candidate: Candidate) -> None:
        import tempfile

        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # the worker dies with this process, however it dies (SIGKILL included): shvit_edge._process
        spec = dict(candidate.spec, parent_pid=os.getpid())
        # the worker's stderr (runtimes' logs) goes to a file: a pipe nobody reads would fill and block it
        candidate.log = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")
        candidate.process = subprocess.Popen(
            [sys.executable, "-m", "shvit_edge.bench.worker", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=candidate.log, text=True, env=env)

    @staticmethod
    def receive(candidate: Candidate) -> dict:
        line = candidate.process.stdout.readline()
        if not line:
            candidate.process.wait()
            candidate.log.seek(0, os.SEEK_END)
            size = candidate.log.tell()
            candidate.log.seek(max(0, size - _LOG_TAIL))
            raise RuntimeError(worker_ended(candidate.process.returncode, candidate.log.read()))
        return json.loads(line)

    @staticmethod
    def ask(candidate: Candidate, request: dict) -> dict:
        candidate.process.stdin.write(json.dumps(request) + "\n")
        candidate.process.stdin.flush()
        return _Worker.receive(candidate)

    @staticmethod
    def stop(candidate: Candidate) -> None:
        process = candidate.process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout, candidate.log):
            if stream is not None:
                stream.close()


def _load(candidate: Candidate) -> bool:
    """Start ``candidate``'s worker and wait until it has loaded and warmed up; False (and ``error`` set) if it
    could not. The first load's ``ready`` facts are kept (a non-resident run loads every round)."""
    _Worker.start(candidate)
    try:
        reply = _Worker.receive(candidate)
    except RuntimeError as exc:
        candidate.error = str(exc)
        return False
    if "error" in reply:
        candidate.error = reply["error"]
        return False
    candidate.ready = candidate.ready or reply["ready"]
    return True


def _finish(candidate: Candidate) -> None:
    """Ask the worker for its peak memory (the largest over its loads is kept) and stop it."""
    rss = _Worker.ask(candidate, {"done": True})["peak_rss_mb"]
    candidate.peak_rss_mb = max(candidate.peak_rss_mb or 0.0, rss)
    _Worker.stop(candidate)
    candidate.process = None


def _summary(candidate: Candidate, baseline_p50: float | None, threads: int, peak: float | None) -> dict:
    import numpy as np

    lat = np.asarray(candidate.latencies, dtype=np.float64)
    p50 = float(np.percentile(lat, 50))
    mean = float(lat.mean())
    gflops = 2 * candidate.macs * candidate.batch / (p50 / 1e3) / 1e9
    manifest = candidate.manifest
    variant, _, _, (h, w), batch = candidate.config
    doc = {
        "artifact": candidate.label, "target": candidate.target, "runtime": candidate.ready["runtime"],
        "threads": threads, "batch": batch,
        "latency_ms": {"p50": round(p50, 4), "p90": round(float(np.percentile(lat, 90)), 4),
                       "p99": round(float(np.percentile(lat, 99)), 4), "mean": round(mean, 4),
                       "min": round(float(lat.min()), 4)},
        "throughput_ips": round(batch / (mean / 1e3), 3),
        "ratio_to_eager": None if baseline_p50 is None else round(p50 / baseline_p50, 4),
        "load_ms": round(candidate.ready["load_ms"], 2),
        "first_inference_ms": round(candidate.ready["first_inference_ms"], 3),
        "peak_rss_mb": round(candidate.peak_rss_mb, 1),
        "gflops": round(gflops, 2),
        "variant": variant, "resolution": [h, w], "macs_per_image": candidate.macs,
        "precision": manifest.precision if manifest is not None else "fp32",
        "quantization": manifest.quantization.mode if manifest is not None and manifest.quantization else None,
        "iterations": int(lat.size),
        "cpu_utilization": round(candidate.cpu_seconds / candidate.wall_seconds, 3),
        "affinity": candidate.ready.get("affinity"),
    }
    if peak:
        doc["fraction_of_gemm_peak"] = round(gflops / peak, 3)
    if manifest is not None:
        doc["profile"] = manifest.profile
        verify = _verify_summary(candidate)
        if verify is not None:
            doc["verify"] = verify
    return doc


def _verify_summary(candidate: Candidate) -> dict | None:
    """The manifest's verify result of the artifact, if the artifact is still the file that was verified
    (its sha256 is the manifest's); ``{"status": "stale", "reason": ...}`` when the file changed since, so an
    old result is never quoted for a different file."""
    manifest = candidate.manifest
    verification = manifest.verification or {}
    for result in verification.get("results", []):
        metrics = next(iter((result.get("metrics") or {}).values()), None)
        if not metrics:
            continue
        # the sha256 verify ran on (recorded since schema 2), else the manifest's
        verified = verification.get("artifact_sha256", manifest.artifact.sha256)
        if candidate.artifact_sha256 != verified:
            return {"status": STALE,
                    "reason": f"the artifact changed after it was verified: its sha256 is "
                              f"{candidate.artifact_sha256}, the verified file's was {verified}; "
                              "verify it again"}
        return {"status": result["status"], "cosine": metrics.get("cosine"), "sqnr_db": metrics.get("sqnr_db"),
                "top1_agreement": metrics.get("top1_agreement")}
    return None


def machine_info(threads: int) -> dict:
    import torch

    return {"platform": platform.platform(), "machine": platform.machine(), "processor": _cpu_model(),
            "python": platform.python_version(), "torch": torch.__version__.split("+")[0],
            "cpus": os.cpu_count(), "usable_cpus": len(usable_cpus()), "threads": threads,
            "cpu_set": usable_cpus()[:threads]}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def bench(paths, options: BenchOptions, progress: Progress | None = None) -> BenchReport:
    """Time every artifact found in ``paths`` (and its eager baseline); see the module's docstring."""
    check_options(options)
    progress = progress or (lambda label, done, total: None)
    candidates, skipped = plan(paths, options)
    if not candidates:
        raise UsageError("nothing to benchmark here: " + "; ".join(f"{s['artifact']}: {s['reason']}"
                                                                  for s in skipped))
    try:
        if options.resident:
            for i, candidate in enumerate(candidates):  # one at a time, so load times do not compete
                if candidate.error is None:  # else refused while planning
                    progress(f"loading {_short(candidate)}", i, len(candidates))
                    _load(candidate)
        live = [c for c in candidates if c.error is None]
        # the machine's fp32 GEMM rate, measured by a baseline worker (same CPUs and threads) in every round
        gemm_worker = next((c for c in live if c.target == "pytorch"), None)
        peak = None
        for round_ in range(options.rounds):
            request = options.round_request(round_)
            for i, candidate in enumerate(live):
                if candidate.error is not None or request is None:
                    continue
                progress(f"round {round_ + 1}/{options.rounds}: {_short(candidate)}", round_ * len(live) + i,
                         options.rounds * len(live))
                if not options.resident and not _load(candidate):
                    continue
                try:
                    reply = _Worker.ask(candidate, request)
                    candidate.latencies.extend(reply["latencies_ms"])
                    candidate.cpu_seconds += reply["cpu_seconds"]
                    candidate.wall_seconds += reply["wall_seconds"]
                    if candidate is gemm_worker:  # the GEMM peak, once a round: the best counts
                        peak = max(peak or 0.0, _Worker.ask(candidate, {"gemm": GEMM_SIZE})["gflops"])
                    if not options.resident:
                        _finish(candidate)
                except (RuntimeError, OSError) as exc:
                    candidate.error = str(exc)
        for candidate in live:
            if options.resident and candidate.error is None:
                try:
                    _finish(candidate)
                except (RuntimeError, OSError) as exc:
                    candidate.error = str(exc)
    finally:
        for candidate in candidates:
            _Worker.stop(candidate)
    baselines = {c.config: c for c in candidates if c.target == "pytorch" and c.error is None}
    baseline_docs = [_summary(c, None, options.threads, peak) for c in baselines.values()]
    for doc in baseline_docs:
        doc["ratio_to_eager"] = 1.0
    results = [_summary(c, _p50(baselines.get(c.config)), options.threads, peak)
               for c in candidates if c.target != "pytorch" and c.error is None]
    failures = [{"artifact": c.label, "target": c.target, "error": c.error} for c in candidates if c.error]
    machine = machine_info(options.threads)
    machine["fp32_gemm_peak_gflops"] = None if peak is None else round(peak, 2)
    settings = {"threads": options.threads, "warmup": options.warmup, "rounds": options.rounds,
                "iterations": None if options.seconds is not None else options.iterations or DEFAULT_ITERATIONS,
                "seconds": options.seconds, "gemm_size": GEMM_SIZE}
    return BenchReport(machine, settings, tuple(baseline_docs), tuple(results), tuple(skipped), tuple(failures))


def _short(candidate: Candidate) -> str:
    return candidate.label if candidate.target == "pytorch" else Path(candidate.label).name


def _p50(candidate: Candidate | None) -> float | None:
    import numpy as np

    if candidate is None or not candidate.latencies:
        return None
    return float(np.percentile(np.asarray(candidate.latencies), 50))

