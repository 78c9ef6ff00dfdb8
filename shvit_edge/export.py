"""Export: one deploy model feeds every backend; each artifact is written atomically with its manifest.

:func:`export` is the library entry point behind ``shvit-edge export``. It loads the checkpoint (or builds a
seeded untrained model), resolves the target profiles, and for each one asks the backend for an artifact in a
temporary path, then publishes the artifact and its manifest (``<artifact>.json``) by rename.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import __version__
from .atomic import (FILE_SHA256_METHOD, FOLDER_SHA256_METHOD, atomic_outputs, check_stop_requested, child_path,
                     remove_stale_temporaries, sha256_of, size_of)
from .bounds import BATCH, CALIBRATION_SAMPLES, JOBS
from .errors import InputError, ShvitEdgeError, UsageError, describe_exception
from .manifest import SCHEMA_VERSION, ArtifactRef, Manifest, Preprocessing, manifest_path
from .models.source import ModelSource, load_source  # noqa: F401 - load_source: re-exported beside export()
from .backends.base import backend_names, backends, get_backend, library_versions, require
from .backends.registry import ensure_registered, origin
from .quantize import calibrated_modes, check_keep_float, check_mode, is_calibrated
from .targets import TargetProfile, resolve_target


@dataclass(frozen=True)
class ExportOptions:
    """The options of one export run: those common to every target, and each backend's own
    (``backend_options``: backend name -> that backend's ``Options``; a backend not named takes its defaults).
    :meth:`create` sorts keyword options into the two, as the CLI passes them."""

    resolution: tuple[int, int]
    batch: int = 1
    precision: str | None = None
    #: a --quantize mode (see :mod:`shvit_edge.quantize`), its calibration folder or "random", and count
    quantize: str | None = None
    calibration: str | None = None
    calibration_samples: int = 32
    #: deploy-model layers (module names, as ``quantize-report`` prints them) left in float by --quantize
    keep_float: tuple[str, ...] = ()
    #: fill the calibration up to ``calibration_samples`` with random crops and flips of the folder's images
    #: (off by default: it lowered int8 SQNR on every backend, benchmarks/int8_ladder.py)
    calibration_augment: bool = False
    #: the quantizer's range estimation (None: the backend's default, :data:`quantize.CALIBRATION_METHODS`)
    calibration_method: str | None = None
    #: data-free transforms of the deploy model before int8 quantization (:data:`quantize.DFQ_CHOICES`)
    dfq: str = "default"
    #: each backend's own options, by backend name (see :meth:`for_backend`)
    backend_options: dict = field(default_factory=dict)

    @classmethod
    def create(cls, **kwargs) -> ExportOptions:
        """Options from keywords: the common ones by name, and every other keyword to the registered backend
        whose ``Options`` has a field of that name (``layout="nhwc"`` is TFLite's). An unknown keyword is a
        TypeError, as for any function."""
        common_names = {f.name for f in dataclasses.fields(cls)} - {"backend_options"}
        common = {k: kwargs.pop(k) for k in list(kwargs) if k in common_names}
        per_backend = {}
        for name, backend in backends().items():
            clash = [f.name for f in dataclasses.fields(backend.Options) if f.name in common_names]
            if clash:  # the registry cannot see the common options: a clash would hide the backend's own
                raise TypeError(f"the {name} backend's option {clash[0]} has the name of a common export option")
            own = {f.name: kwargs.pop(f.name) for f in dataclasses.fields(backend.Options) if f.name in kwargs}
            if own:
                per_backend[name] = backend.Options(**own)
        if kwargs:
            raise TypeError(f"unknown export option(s): {', '.join(sorted(kwargs))}")
        return cls(**common, backend_options=per_backend)

    def for_backend(self, name: str):
        """Backend ``name``'s own options (its defaults unless given)."""
        given = self.backend_options.get(name)
        return given if given is not None else get_backend(name).Options()


@dataclass
class ExportJob:
    """One target's export: the shared source, the target profile, and the options as they apply here."""

    source: ModelSource
    profile: TargetProfile
    options: ExportOptions
    precision: str
    #: where progress messages go (the CLI's status line; nothing in a worker process)
    progress: Callable[[str], None] | None = None

    @property
    def resolution(self) -> tuple[int, int]:
        return self.options.resolution

    @property
    def backend_options(self):
        """This job's backend's own options (its ``Options``)."""
        return self.options.for_backend(self.profile.backend)

    def preprocessing(self, applied: str = "none") -> Preprocessing:
        """How an image becomes this job's input (the model family's evaluation crop for the resolution)."""
        h, w = self.resolution
        mean, std, crop_pct = self.source.preprocessing()
        return Preprocessing(mean=mean, std=std, scale=1 / 255, resize=int(min(h, w) / crop_pct), applied=applied)

    def calibration(self):
        """The calibration inputs of a calibrated --quantize mode, preprocessed for this job's input."""
        from .quantize import calibration_inputs

        augment = self.options.calibration_augment and get_backend(self.profile.backend).augments_calibration
        return calibration_inputs(self.options.calibration, self.options.calibration_samples, self.resolution,
                                  self.preprocessing(), augment=augment, progress=self.progress)

    def calibration_method(self) -> str | None:
        """The range estimation this job's quantizer uses (see :data:`quantize.CALIBRATION_METHODS`)."""
        from .quantize import resolve_calibration_method

        return resolve_calibration_method(self.profile.backend, self.options.quantize, self.options.calibration_method)

    def transforms(self) -> tuple[str, ...]:
        """The data-free transforms applied to this job's deploy model (see :func:`quantize.resolve_dfq`)."""
        from .quantize import resolve_dfq

        return resolve_dfq(self.profile.backend, self.options.quantize, self.options.dfq)

    def deploy_model(self, layout: str = "nchw"):
        """The deploy model this job converts: the source's, with :meth:`transforms` applied."""
        return self.source.deploy_model(layout=layout, transforms=self.transforms())

    def exported_program(self, example, dynamic_batch: bool = False):
        return self.source.exported_program(example, dynamic_batch=dynamic_batch, transforms=self.transforms())

    def calibration_batches(self, calibration):
        """``calibration``'s inputs in this job's batch, with progress (see :func:`quantize.calibration_batches`)."""
        from .quantize import calibration_batches

        return calibration_batches(calibration, self.options.batch, self.progress)

    def quantization(self, calibration=None):
        """The manifest's record of this job's --quantize (``calibration``: what a calibrated mode used)."""
        from .manifest import Quantization

        source, count = (calibration.source, calibration.count) if calibration is not None else (None, 0)
        return Quantization(self.options.quantize, source, count, keep_float=self.options.keep_float,
                            calibration_augmented=calibration.augmented if calibration is not None else 0,
                            calibration_method=self.calibration_method() if calibration is not None else None,
                            transforms=self.transforms())

    def example_input(self, layout: str = "nchw", seed: int = 0):
        import torch

        h, w = self.resolution
        shape = (self.options.batch, 3, h, w) if layout == "nchw" else (self.options.batch, h, w, 3)
        return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@dataclass(frozen=True)
class ExportedArtifact:
    target: str
    profile: str
    path: Path
    manifest: Path
    sha256: str
    size_bytes: int
    seconds: float

    def as_json(self) -> dict:
        return {"target": self.target, "profile": self.profile, "path": str(self.path),
                "manifest": str(self.manifest), "sha256": self.sha256, "size_bytes": self.size_bytes,
                "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class ExportFailure:
    target: str
    profile: str
    message: str
    exit_code: int


@dataclass(frozen=True)
class ExportReport:
    artifacts: tuple[ExportedArtifact, ...]
    failures: tuple[ExportFailure, ...]
    untrained: bool
    #: verify's results for the artifacts, when the export verified them (:func:`shvit_edge.pipeline.export`)
    verification: tuple = ()


Progress = Callable[[str], None]


def resolve_targets(spec: str) -> list[TargetProfile]:
    """``all``, a backend, a profile name or a TOML path; several may be given comma-separated."""
    names = [s.strip() for s in str(spec).split(",") if s.strip()]
    if not names:
        raise UsageError("no target given")
    profiles: list[TargetProfile] = []
    for name in names:
        for item in (backend_names() if name == "all" else (name,)):
            profile = resolve_target(item)
            if profile.name not in [p.name for p in profiles]:
                profiles.append(profile)
    return profiles


def artifact_name(variant: str, profile: TargetProfile, options: ExportOptions, precision: str, suffix: str) -> str:
    """``<variant>_<H>x<W>[_b<batch>][_<backend's tags>][_<quantize mode>][_<profile, unless the default>]``."""
    backend = get_backend(profile.backend)
    h, w = options.resolution
    parts = [variant, f"{h}x{w}"]
    if options.batch != 1:
        parts.append(f"b{options.batch}")
    parts.extend(backend.artifact_tags(profile, options, options.for_backend(profile.backend), precision))
    if options.quantize:
        parts.append(options.quantize)
    if profile.name != backend.default_profile:
        parts.append(profile.name)
    return "_".join(parts) + suffix


def check_options(profiles: list[TargetProfile], options: ExportOptions, source: ModelSource | None = None) -> None:
    """Every usage error of ``options`` for ``profiles``, raised before anything is converted: the common
    options (and, given the ``source``, whether its model family takes the resolution), then each requested
    target's backend checks its own (and none is set for a backend that is not among the targets)."""
    BATCH.check("--batch", options.batch)
    from .models.variants import parse_resolution

    parse_resolution(options.resolution)
    if source is not None:
        source.family.check_resolution(source.variant, options.resolution)
    requested = {p.backend for p in profiles}
    for name in options.backend_options:
        get_backend(name)  # an unknown backend's options
    for name, backend in backends().items():
        own = options.for_backend(name)
        if not isinstance(own, backend.Options):
            raise UsageError(f"the {name} options must be {backend.Options.__name__}, not {type(own).__name__}")
        backend.check_choices(own)
        flags = backend.option_flags(own)
        if flags and name not in requested:
            raise UsageError(f"{flags[0]} applies to the {name} target only, and it is not among the targets")
    for profile in profiles:
        precision = options.precision or profile.export.precision
        if precision not in profile.export.precisions:
            if options.precision is not None and len(profiles) > 1:
                continue  # with several targets, --precision applies where the profile allows it
            raise UsageError(f"target {profile.name} does not offer {precision} (it offers: "
                             f"{', '.join(profile.export.precisions)})")
        if options.quantize:
            check_mode(profile, options.quantize)
    calibrated = any(is_calibrated(p.backend, options.quantize) for p in profiles)
    if calibrated and options.calibration is None:
        raise UsageError(f"--quantize {options.quantize} is calibrated: give --calibration DIR (an image folder) "
                         "or --calibration random")
    if options.keep_float and not options.quantize:
        raise UsageError("--keep-float applies with --quantize")
    from .quantize import resolve_calibration_method, resolve_dfq

    resolved = [resolve_dfq(profile.backend, options.quantize, options.dfq) for profile in profiles]
    if options.dfq not in ("default", "none") and not any(resolved):
        offering = [name for name, b in backends().items() if b.dfq_default is not None]
        raise UsageError(f"--dfq {options.dfq} applies to --quantize int8 on {', '.join(offering)}")
    if options.calibration_method is not None and len(profiles) == 1:
        resolve_calibration_method(profiles[0].backend, options.quantize, options.calibration_method)
    if options.calibration_method is not None and len(profiles) > 1:
        raise UsageError("--calibration-method names one backend's method: export one target at a time")
    for profile in profiles:
        backend = get_backend(profile.backend)
        backend.check(profile, options, options.for_backend(profile.backend))
    if options.calibration is not None:  # before any conversion starts
        if not calibrated:
            raise UsageError("--calibration applies to a calibrated --quantize mode "
                             f"({', '.join(calibrated_modes())})")
        CALIBRATION_SAMPLES.check("--calibration-samples", options.calibration_samples)
        if options.calibration != "random":
            from .images import list_images

            list_images(options.calibration, "--calibration", limit=options.calibration_samples)


def check_dfq(source: ModelSource, profiles: list[TargetProfile], options: ExportOptions, progress) -> None:
    """A usage error when a ``--dfq`` transform asked for would leave ``source``'s model as it is (a family
    without the ReLU pairs it works through); else say how much each one acts on."""
    from .models import dfq
    from .quantize import resolve_dfq

    asked = {t for p in profiles for t in resolve_dfq(p.backend, options.quantize, options.dfq)}
    if not asked:
        return
    found = dfq.coverage(source.deploy_model(), source.model)
    for transform in dfq.TRANSFORMS:
        if transform in asked and not found[transform]:
            raise UsageError(f"--dfq {options.dfq}: {transform} has nothing to act on in {source.variant}: "
                             f"{dfq.NOTHING_TO_ACT_ON[transform]}")
    progress("data-free transforms: " + ", ".join(f"{t} on {found[t]} conv pairs" for t in dfq.TRANSFORMS
                                                  if t in asked))


def _precision_for(profile: TargetProfile, options: ExportOptions) -> str:
    if options.precision and options.precision in profile.export.precisions:
        return options.precision
    return profile.export.precision


def export(source: ModelSource, profiles: list[TargetProfile], options: ExportOptions, out_dir,
           force: bool = False, progress: Progress | None = None, jobs: int = 1) -> ExportReport:
    """Export ``source`` for every profile into ``out_dir``. With one profile a failure raises; with several,
    each finished artifact stays and failures are collected in the report. ``jobs`` > 1 exports several
    targets at once, each in a worker process (see :func:`_export_parallel`)."""
    progress = progress or (lambda message: None)
    check_options(profiles, options, source)
    for profile in profiles:  # a missing extra, before the first conversion
        require(profile.backend)
    if options.keep_float:
        check_keep_float(source.deploy_model(), options.keep_float)
    check_dfq(source, profiles, options, progress)
    JOBS.check("--jobs", jobs)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    planned = []
    for profile in profiles:
        backend = get_backend(profile.backend)
        precision = _precision_for(profile, options)
        path = child_path(out, artifact_name(source.variant, profile, options, precision, backend.suffix))
        planned.append((profile, backend, precision, path))
    existing = [str(p) for *_, p in planned if (p.exists() or p.is_symlink() or manifest_path(p).exists())]
    if existing and not force:
        raise UsageError(f"{existing[0]} already exists; pass --force to overwrite"
                         + (f" ({len(existing) - 1} more)" if len(existing) > 1 else ""))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from None
    remove_stale_temporaries(out)
    if jobs > 1 and len(planned) > 1:
        results = _export_parallel(source, planned, options, force, min(jobs, len(planned)), progress, out)
        return ExportReport(tuple(r for r in results if isinstance(r, ExportedArtifact)),
                            tuple(r for r in results if isinstance(r, ExportFailure)), source.untrained)
    artifacts, failures = [], []
    for profile, backend, precision, path in planned:
        job = ExportJob(source=source, profile=profile, options=options, precision=precision, progress=progress)
        try:
            progress(f"exporting {source.variant} for {profile.name} ({profile.backend}) ...")
            artifacts.append(_export_one(job, backend, path, force))
            progress(f"wrote {path}")
        except Exception as exc:  # noqa: BLE001 - a backend library's own failure, reported by target
            if len(planned) == 1:
                if isinstance(exc, ShvitEdgeError):
                    raise
                raise ExportFailed(profile, exc) from exc
            failures.append(_failure(profile, exc))
    return ExportReport(tuple(artifacts), tuple(failures), source.untrained)


def _failure(profile: TargetProfile, exc: BaseException) -> ExportFailure:
    if isinstance(exc, ShvitEdgeError):
        return ExportFailure(profile.backend, profile.name, str(exc), exc.exit_code)
    return ExportFailure(profile.backend, profile.name, describe_exception(exc), 1)


def _export_parallel(source: ModelSource, planned: list, options: ExportOptions, force: bool, jobs: int,
                     progress: Progress, out: Path) -> list:
    """The targets on ``jobs`` lanes: this process and ``jobs - 1`` spawned workers. The result (artifact or
    failure) of each target, in ``planned`` order.

    Longest first: this process, which already holds the model and its captures, exports the longest target
    while the workers start up and take the others in order; when done it takes back any target no worker
    has started (the cheapest, queued last), where it reuses its captures. Workers get the model once, as
    weights in a private temporary file (:class:`_SourceOnDisk`), and share their own captures between their targets.
    Spawned, not forked: this process has used torch's OpenMP pool, and a fork of it can hang in the child.

    Ctrl-C or SIGTERM stops every worker, each of which removes its temporaries (its signal handler raises
    inside the export, as here); a worker that does not stop within a grace period is killed and its
    temporaries removed here. A worker that dies (a converter crashing) fails the targets it held, not the run.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import torch

    # the backends' relative conversion cost (S4 on 2 cores, benchmarks/results/export_seconds.json): the
    # longest starts first, so the short ones fill in around it
    order = sorted(range(len(planned)), key=lambda i: -planned[i][1].export_cost)
    results: list = [None] * len(planned)
    finished = 0

    def record(i: int, result) -> None:
        nonlocal finished
        results[i], finished = result, finished + 1
        done = planned[i][3] if isinstance(result, ExportedArtifact) else f"{planned[i][0].name} FAILED"
        progress(f"{finished}/{len(planned)} done ({done}); exporting the rest in {jobs} processes ...")

    def here(i: int) -> None:
        profile, backend, precision, path = planned[i]
        progress(f"exporting {source.variant} for {len(planned)} targets in {jobs} processes ...")
        try:
            record(i, _export_one(ExportJob(source, profile, options, precision, progress), backend, path, force))
        except Exception as exc:  # noqa: BLE001 - reported by target
            record(i, _failure(profile, exc))

    threads = max(1, usable_cpus() // jobs)  # per lane: idle OpenMP threads spin, taking CPU from the others
    workers = min(jobs - 1, len(order) - 1)
    scratch = tempfile.TemporaryDirectory(prefix="shvit-edge-export-")  # private (0700): the weights for workers
    try:
        on_disk = _SourceOnDisk(source, Path(scratch.name) / "weights.safetensors")
    except BaseException:
        scratch.cleanup()
        raise
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init,
                               initargs=(on_disk, threads, os.getpid(), [origin(p[0].backend) for p in planned]))
    try:
        futures = {pool.submit(_worker_export, planned[i][0], options, planned[i][2], planned[i][3], force): i
                   for i in order[1:]}
        here(order[0])
        check_stop_requested()  # a stop that a converter swallowed
        for future in reversed(list(futures)):  # queued last: the cheapest
            if future.cancel():
                here(futures.pop(future))
                check_stop_requested()
        for future in as_completed(futures):
            try:
                record(futures[future], future.result())
            except Exception as exc:  # noqa: BLE001 - the worker process died (BrokenProcessPool)
                record(futures[future], _failure(planned[futures[future]][0],
                                                 RuntimeError(f"the export process died: {describe_exception(exc)}")))
    except BaseException:
        _stop_workers()
        remove_stale_temporaries(out)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(previous_threads)
        scratch.cleanup()
    return results


class _SourceOnDisk:
    """What a spawned export worker is started with: ``source`` with its weights left in a file (safetensors, as
    :meth:`ModelSource.__getstate__` makes them) that the worker reads. The spawn pipe carries only this. With the
    weights in it, the parent blocked for good writing them when a worker died before reading (CPython keeps the
    pipe's read end open until the write is done): a script calling ``export(jobs=2)`` without the ``if __name__
    == "__main__"`` guard, whose workers die re-running it, hung instead of reporting the dead worker."""

    def __init__(self, source: ModelSource, path: Path):
        state = source.__getstate__()
        variant, num_classes, distillation, weights = state["model"]
        path.write_bytes(weights)
        self.state = dict(state, model=(variant, num_classes, distillation, str(path)))

    def load(self) -> ModelSource:
        variant, num_classes, distillation, path = self.state["model"]
        source = ModelSource.__new__(ModelSource)
        source.__setstate__(dict(self.state, model=(variant, num_classes, distillation, Path(path).read_bytes())))
        return source


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _stop_workers(grace_seconds: float = 10.0) -> None:
    """SIGTERM every worker (an exporting one cleans up and ends, an idle one ends at once), then SIGKILL
    those still running after the grace period: a converter deep in native code handles no signal."""
    import multiprocessing

    children = multiprocessing.active_children()
    for child in children:
        child.terminate()
    deadline = time.monotonic() + grace_seconds
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
        if child.is_alive():
            child.kill()
            child.join()


_worker_source: ModelSource | None = None


def _worker_init(source: _SourceOnDisk, threads: int, parent_pid: int, origins: list) -> None:
    import torch

    from ._process import die_with_parent

    for where in origins:  # a backend registered by the caller's own code (not a module of the package)
        ensure_registered(where)

    global _worker_source
    die_with_parent(parent_pid)  # a worker of a killed parent must not go on and publish an artifact
    os.dup2(2, 1)  # the parent's stdout carries --json: a library's print in here must not land in it
    # Between exports a signal ends the worker at once, whichever of its threads the kernel hands it to
    # (a Python handler would wait for the main thread, blocked reading the next task).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    torch.set_num_threads(threads)
    _worker_source = source.load()
    try:  # tqdm (the converters' progress bars) would make a multiprocessing lock, and a worker ended by
        import tqdm  # a signal would leave it for the resource tracker to warn about; a thread lock will do

        tqdm.tqdm.set_lock(threading.RLock())
    except ImportError:
        pass


def _worker_export(profile: TargetProfile, options: ExportOptions, precision: str, path: Path, force: bool):
    """One target in a worker. During the export SIGTERM and SIGINT raise, as in a single-process run, so the
    export's temporaries are removed."""
    from .atomic import raise_on_signal

    job = ExportJob(source=_worker_source, profile=profile, options=options, precision=precision)
    signal.signal(signal.SIGTERM, raise_on_signal)
    signal.signal(signal.SIGINT, raise_on_signal)
    try:
        return _export_one(job, get_backend(profile.backend), path, force)
    except Exception as exc:  # noqa: BLE001 - reported by target, as in the single-process run
        return _failure(profile, exc)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)


class ExportFailed(ShvitEdgeError):
    """A backend's converter failed (exit 1)."""

    exit_code = 1

    def __init__(self, profile: TargetProfile, exc: BaseException):
        super().__init__(f"{profile.backend} export for {profile.name} failed: {describe_exception(exc)}")


def _export_one(job: ExportJob, backend, path: Path, force: bool) -> ExportedArtifact:
    import torch

    require(job.profile.backend)
    mpath = manifest_path(path)
    start = time.perf_counter()
    with atomic_outputs(path, mpath, overwrite=force) as (tmp, mtmp):
        result = backend.export(job, tmp)
        seconds = time.perf_counter() - start
        sha, size = sha256_of(tmp), size_of(tmp)
        source = job.source
        h, w = job.resolution
        manifest = Manifest(
            schema_version=SCHEMA_VERSION, shvit_edge_version=__version__, target=job.profile.backend,
            profile=job.profile.name, variant=source.variant, resolution=(h, w), batch=job.options.batch,
            num_classes=source.num_classes, distillation=source.distillation, checkpoint=source.checkpoint,
            inputs=result.inputs, outputs=result.outputs,
            preprocessing=job.preprocessing(result.preprocessing_applied),
            precision=job.precision, quantization=result.quantization,
            versions={"torch": torch.__version__.split("+")[0], **library_versions(job.profile.backend)},
            artifact=ArtifactRef(file=path.name, sha256=sha,
                                 sha256_method=FOLDER_SHA256_METHOD if tmp.is_dir() else FILE_SHA256_METHOD,
                                 size_bytes=size),
            export_seconds=round(seconds, 3), untrained=source.untrained, labels=source.labels_source,
            details=result.details, tolerances=dict(job.profile.tolerances),
            family=source.family.name, **source.measure((h, w)),
        )
        mtmp.write_text(manifest.to_json(), encoding="utf-8")
    return ExportedArtifact(job.profile.backend, job.profile.name, path, mpath, sha, size, seconds)
