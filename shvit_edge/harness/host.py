"""The host harness (``shvit-edge harness run BUNDLE``): a bundle run on this machine's runtimes exactly as an app
runs it on a phone, written as a result document (``shvit_edge/schemas/result.schema.json``, schema_version 2).

It is the reference implementation of the protocol the device apps follow (docs/bundle.md): check the bundle
(every sha256), then for each artifact and each runtime setting, in a process of its own
(:mod:`shvit_edge.harness.worker`), load, first inference, warm-up, timed iterations with every latency kept,
and one pass for the raw outputs. It measures and does not judge: parity is computed at ingest, against the
bundle's references, as for a phone.

The settings are this machine's, not the phone's: the runtime's default on the CPU for ONNX, ExecuTorch and
LiteRT, and for Core ML its compute units on macOS, the ``coreml-sim`` interpreter elsewhere (its time is
recorded with the meaning "interpreter, not a latency"). A run that fails is in the document as failed, with why.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .. import __version__
from ..atomic import atomic_outputs
from ..errors import CheckFailed, UsageError, describe_exception
from .bundle import Bundle, BundleArtifact, check_run_settings, open_bundle
from .documents import validate
from .records import HOST_WALL_TIME, INTERPRETED

RESULT_SCHEMA_VERSION = 2
RESULT_KIND = "shvit-edge-result"
HARNESS_NAME = "shvit-edge host harness"
#: how long one run may take before it is stopped and recorded as failed
RUN_TIMEOUT_SECONDS = 1800

Progress = Callable[[str], None]


@dataclass(frozen=True)
class HarnessOptions:
    #: the bundle's run settings, unless given here
    warmup: int | None = None
    iterations: int | None = None
    threads: int | None = None
    #: only the artifacts with these names (all when empty)
    only: tuple[str, ...] = ()


def check_options(options: HarnessOptions) -> None:
    check_run_settings(options.warmup, options.iterations, options.threads)


def host_device() -> dict:
    """This machine as a result document's ``device``."""
    soc = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                soc = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    device = {"model": platform.node() or "host", "os": platform.system() or "unknown",
              "os_version": platform.release(), "arch": platform.machine(), "app_version": __version__}
    if soc:
        device["soc"] = soc
    if os.cpu_count():
        device["cpus"] = os.cpu_count()
    return device


def run_bundle(path, out: Path | None, options: HarnessOptions, progress: Progress | None = None) -> dict:
    """Run the bundle at ``path`` on this machine; the result document (written atomically at ``out`` if given).
    Raises :class:`CheckFailed` after writing it when every run failed."""
    progress = progress or (lambda message: None)
    check_options(options)
    if out is not None and not Path(out).parent.is_dir():
        raise UsageError(f"{Path(out).parent}: no such folder for --out")
    with open_bundle(path) as bundle:
        chosen = [a for a in bundle.artifacts if not options.only or a.name in options.only]
        missing = set(options.only) - {a.name for a in bundle.artifacts}
        if missing:
            raise UsageError(f"--artifact {sorted(missing)[0]}: not in the bundle (it holds: "
                             f"{', '.join(a.name for a in bundle.artifacts)})")
        runs = []
        for artifact in chosen:
            for setting in _host_settings(artifact):
                progress(f"running {artifact.name}" + (f" ({setting})" if setting else "") + " ...")
                runs.append(_run(bundle, artifact, setting, options))
    doc = {"schema_version": RESULT_SCHEMA_VERSION, "kind": RESULT_KIND,
           "bundle": {"id": bundle.id, "name": Path(path).name},
           "harness": {"name": HARNESS_NAME, "version": __version__},
           "device": host_device(),
           "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "runs": runs}
    validate(doc, "result", "the host harness's result")  # never write what ingest would refuse
    if out is not None:
        with atomic_outputs(Path(out), overwrite=True) as (tmp,):
            tmp.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    if runs and all(r["status"] == "failed" for r in runs):
        raise CheckFailed("every run failed: " + "; ".join(f"{r['artifact']}: {r['error']}" for r in runs))
    return doc


def _host_settings(artifact: BundleArtifact) -> tuple[str | None, ...]:
    """The runtime settings this machine runs an artifact under: verify's (Core ML's compute units on macOS, the
    interpreter elsewhere; the runtime's default for the others)."""
    from ..backends.base import get_backend
    from ..verify import profile_of

    backend = get_backend(artifact.manifest.target)
    return tuple(backend.runtime_settings(profile_of(artifact.manifest)))


def _run(bundle: Bundle, artifact: BundleArtifact, setting: str | None, options: HarnessOptions) -> dict:
    from ..backends.base import get_backend, library_versions
    from ..backends.registry import origin

    plan = artifact.entry["run"]
    backend = get_backend(artifact.manifest.target)
    versions = ", ".join(f"{k} {v}" for k, v in library_versions(backend.name).items())
    record = {"artifact": artifact.name, "artifact_sha256": artifact.entry["sha256"], "runtime": backend.title,
              **({"runtime_version": versions} if versions else {}),
              "setting": setting or "default",
              "threads": options.threads or plan["threads"],
              "meaning": INTERPRETED if setting in backend.interpreters else HOST_WALL_TIME,
              "warmup": plan["warmup"] if options.warmup is None else options.warmup}
    if setting not in backend.interpreters:
        why = backend.cannot_run_here(str(artifact.path), artifact.manifest)
        if why is not None:
            return {**record, "status": "skipped", "error": why}
    with tempfile.TemporaryDirectory(prefix="shvit-edge-harness-") as tmp:
        folder = Path(tmp)
        np.save(folder / "inputs.npy", artifact.inputs())
        spec = {"parent_pid": os.getpid(), "artifact": str(artifact.path), "setting": setting,
                "threads": record["threads"], "warmup": record["warmup"],
                "iterations": plan["iterations"] if options.iterations is None else options.iterations,
                "inputs": str(folder / "inputs.npy"), "outputs": str(folder / "outputs.npy"),
                "status": str(folder / "status.json"), "backend": origin(artifact.manifest.target)}
        (folder / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
        log = folder / "log.txt"
        try:
            with open(log, "wb") as sink:
                process = subprocess.run([sys.executable, "-m", "shvit_edge.harness.worker", str(folder / "spec.json")],
                                         stdout=sink, stderr=sink, timeout=RUN_TIMEOUT_SECONDS, check=False)
        except subprocess.TimeoutExpired:
            return {**record, "status": "failed", "error": f"the run took more than {RUN_TIMEOUT_SECONDS} s"}
        except OSError as exc:
            return {**record, "status": "failed", "error": describe_exception(exc)}
        status = folder / "status.json"
        if not status.is_file():
            return {**record, "status": "failed", "error": _death(process.returncode, log)}
        found = json.loads(status.read_text(encoding="utf-8"))
        if "error" in found:
            return {**record, "status": "failed", "error": found["error"]}
        outputs = np.load(folder / "outputs.npy").astype("<f4")
    record["runtime"] = found["runtime"]
    record.update({k: found[k] for k in ("load_ms", "first_inference_ms", "latencies_ms", "peak_memory_mb",
                                         "thermal_before", "thermal_after")})
    record["status"], record["error"] = "ok", None
    record["output"] = {"shape": list(outputs.shape), "dtype": "float32",
                        "base64": base64.b64encode(outputs.tobytes()).decode("ascii")}
    if found.get("details"):
        record["details"] = found["details"]
    return record


def _death(returncode: int, log: Path) -> str:
    from .._process import signal_name

    how = f"killed by {signal_name(-returncode)}" if returncode < 0 else f"exit {returncode}"
    lines = [ln for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    return f"the runtime process died ({how}){': ' + lines[-1][:300] if lines else ''}"
