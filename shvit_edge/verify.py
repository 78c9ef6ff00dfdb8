"""Verify: run each artifact in the runtime that ships it and compare it with the PyTorch model it came from.

:func:`verify` is the library entry point behind ``shvit-edge verify``. For every artifact it checks the
file's sha256 against the manifest before anything runs, rebuilds the reference model from the manifest's
checkpoint (or ``--checkpoint``), feeds both the same inputs (real images preprocessed as the manifest says,
plus seeded random ones), and judges the metrics against the tolerances for the artifact's precision or
quantization class: those the manifest recorded at export (the profile the user exported with, their own
included), else, for a manifest from before they were recorded, those of the profile it names. Core ML runs
only on Apple hardware; elsewhere a package gets its structural check and then runs in the ``coreml-sim``
interpreter (:mod:`shvit_edge.backends.coreml.sim`), judged by the same metrics and tolerances, and fails when
an fp16 op overflows (each result's ``details`` carry the per-op fp16 headroom). ``--runtime`` adds an
interpreter setting beside the real runtime (on macOS), or one of its device-like modes. Each result is also
written into the manifest's ``verification`` section.

Each artifact is loaded and run in a child process of its own (:mod:`shvit_edge.verify_worker`): a runtime
that aborts on a corrupt file fails that artifact, and the others are still verified. The child gets the
inputs as a ``.npy`` file and returns the outputs the same way; this process computes the reference and judges.

What is refused before anything runs (a usage or input error, exit 2): an artifact that is no regular file or
folder (a FIFO, a device, a socket, a symlink to one; a package holding a symlink or such an entry: reading it
could hang, and it is no artifact), bad option values (:mod:`shvit_edge.bounds`), ``--trust-checkpoint``
without ``--checkpoint``, tolerances outside their range. What fails an artifact (exit 1): a sha256 that differs
from the manifest's, a manifest recording the old unframed ``.mlpackage`` digest or an unknown digest method,
a runtime that fails or crashes, an output or a reference that does not depend on the input, and metrics
outside the tolerances.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import __version__
from .artifacts import find_artifacts
from .atomic import (FILE_SHA256_METHOD, FOLDER_SHA256_METHOD, LEGACY_FOLDER_SHA256_METHOD, atomic_outputs, sha256_of)
from .bounds import COSINE, FRACTION, MAX_ABS, SAMPLES, SEED, SQNR_DB, THREADS, Bounds
from .errors import InputError, UsageError, describe_exception
from .manifest import Manifest, manifest_path, read_manifest
from .parity.judge import judge
from .parity.metrics import compare
from .parity.run import input_mismatch, run_batched  # noqa: F401 - run_batched: importable from here as before
from .targets import TargetProfile, Tolerance, resolve_target

PASS, FAIL, SKIPPED = "pass", "fail", "skipped"
TOLERANCE_FLAGS = ("cosine", "max_abs", "top1_agreement", "sqnr_db")
#: each tolerance field's range, and the option that overrides it
TOLERANCE_BOUNDS: dict[str, tuple[Bounds, str]] = {
    "cosine": (COSINE, "--min-cosine"), "max_abs": (MAX_ABS, "--max-abs"),
    "top1_agreement": (FRACTION, "--min-top1"), "sqnr_db": (SQNR_DB, "--min-sqnr")}

Progress = Callable[[str], None]
#: told what went wrong besides the results (a manifest that could not be updated); the results stand
Warn = Callable[[str], None]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifyOptions:
    images: str | None = None
    samples: int = 8
    seed: int = 0
    #: the reference checkpoint instead of the one each manifest names
    checkpoint: str | None = None
    #: load ``checkpoint`` (only that one: never a checkpoint a manifest names) allowing arbitrary pickles
    trust_checkpoint: bool = False
    #: tolerance fields (see :class:`~shvit_edge.targets.Tolerance`) that replace the manifest's or profile's
    overrides: dict = field(default_factory=dict)
    threads: int | None = None
    #: interpreter settings to run beside each artifact's own runtime (``coreml-sim`` on macOS, or one of its
    #: device-like modes): a backend's :attr:`~shvit_edge.backends.base.Backend.interpreters`
    runtimes: tuple[str, ...] = ()


@dataclass(frozen=True)
class VerifyResult:
    artifact: str
    target: str
    runtime: str
    status: str
    metrics: dict
    tolerances: dict
    reason: str
    #: what was found besides the outputs: the facts of the backend's structural check (``structure``) and what
    #: the runtime observed (the Core ML interpreter's per-op ``fp16_headroom``)
    details: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        return _finite(dataclasses.asdict(self))


def _finite(value):
    """``value`` with every NaN or infinity replaced by None: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def check_options(options: VerifyOptions) -> None:
    """Raise :class:`UsageError` for an option outside its range (the same :mod:`shvit_edge.bounds` the command
    line checks), an unknown tolerance, or ``trust_checkpoint`` without ``checkpoint``."""
    SAMPLES.check("--samples", options.samples)
    SEED.check("--seed", options.seed)
    if options.threads is not None:
        THREADS.check("--threads", options.threads)
    unknown = set(options.overrides) - set(TOLERANCE_FLAGS)
    if unknown:
        raise UsageError(f"unknown tolerance {sorted(unknown)[0]!r}")
    for name, value in options.overrides.items():
        if value is not None:
            bounds, flag = TOLERANCE_BOUNDS[name]
            bounds.check(flag, value)
    offered = interpreter_settings()
    for name in options.runtimes:
        if name not in offered:
            raise UsageError(f"--runtime {name}: not a runtime verify can add (it can add: "
                             f"{', '.join(offered) or 'none'})")
    if options.trust_checkpoint and options.checkpoint is None:
        raise UsageError("--trust-checkpoint applies to --checkpoint FILE only: a checkpoint a manifest names is "
                         "always loaded safely (weights only); give the file you trust with --checkpoint")


def interpreter_settings() -> tuple[str, ...]:
    """Every interpreter setting a registered backend offers (``--runtime`` choices)."""
    from .backends.registry import backends

    return tuple(name for backend in backends().values() for name in backend.interpreters)


def manifest_checkpoint(manifest: Manifest, artifact: Path) -> Path:
    """The checkpoint a manifest names: its path as given, or, when that is relative and not found from the
    current folder, relative to the manifest's folder."""
    given = Path(manifest.checkpoint.path)
    if given.is_file():
        return given
    beside = manifest_path(artifact).parent / given
    if not given.is_absolute() and beside.is_file():
        return beside
    where = "" if given.is_absolute() else f" (looked here and in {manifest_path(artifact).parent})"
    raise InputError(f"{artifact}: its checkpoint {manifest.checkpoint.path} (from the manifest) is not "
                     f"found{where}; pass --checkpoint")


class References:
    """Reference models and their outputs, loaded once per checkpoint and computed once per input set.

    ``--trust-checkpoint`` applies to ``--checkpoint`` only: a manifest can name any file, so the checkpoint
    it names is always loaded weights-only."""

    def __init__(self, options: VerifyOptions):
        self.options = options
        self._sources: dict = {}
        self._outputs: dict = {}

    def source(self, manifest: Manifest, artifact: Path):
        from .models.source import load_source

        ref = manifest.checkpoint
        if self.options.checkpoint is not None:
            key = ("checkpoint", self.options.checkpoint, ref.use_ema)
            if key not in self._sources:
                self._sources[key] = load_source(variant=None, checkpoint=self.options.checkpoint,
                                                 use_ema=ref.use_ema, trust_checkpoint=self.options.trust_checkpoint)
        elif manifest.untrained:
            key = ("untrained", manifest.variant, ref.seed)
            if key not in self._sources:
                self._sources[key] = load_source(variant=manifest.variant, checkpoint=None, seed=ref.seed or 0)
        else:
            path = manifest_checkpoint(manifest, artifact)
            key = ("checkpoint", str(path.resolve()), ref.use_ema)
            if key not in self._sources:
                self._sources[key] = load_source(variant=manifest.variant, checkpoint=str(path), use_ema=ref.use_ema,
                                                 trust_checkpoint=False)
        source = self._sources[key]
        if (source.variant, source.num_classes) != (manifest.variant, manifest.num_classes):
            raise InputError(f"{artifact} was exported from {manifest.variant} with {manifest.num_classes} classes; "
                             f"the reference is {source.variant} with {source.num_classes} classes")
        return key, source

    def outputs(self, key, source, x: np.ndarray, inputs_key) -> np.ndarray:
        import torch

        if (key, inputs_key) not in self._outputs:
            with torch.no_grad():  # in chunks: --samples can be large
                self._outputs[(key, inputs_key)] = np.concatenate(
                    [source.model(torch.from_numpy(x[i:i + 32])).numpy() for i in range(0, len(x), 32)])
        return self._outputs[(key, inputs_key)]


class Inputs:
    """The inputs every artifact of one resolution gets: the images' pixels and seeded random inputs."""

    def __init__(self, options: VerifyOptions, images: list[Path]):
        self.options, self.images = options, images
        self._cache: dict = {}

    def get(self, manifest: Manifest, image_input: bool) -> tuple[np.ndarray, np.ndarray, tuple]:
        """(artifact input, reference input (normalized float), cache key)."""
        from .images import load_pixels, normalize

        h, w = manifest.resolution
        pre = manifest.preprocessing
        key = ((h, w), pre, image_input)
        if key not in self._cache:
            n = self.options.samples
            pixels = load_pixels(self.images, (h, w), pre) if self.images else np.zeros((0, 3, h, w), np.uint8)
            rng = np.random.default_rng(self.options.seed)
            if image_input:  # random images for an image input; the reference sees them normalized
                pixels = np.concatenate([pixels, rng.integers(0, 256, (n, 3, h, w), dtype=np.uint8)])
                self._cache[key] = (pixels, normalize(pixels, pre))
            else:  # random inputs already normalized, standard normal
                x = np.concatenate([normalize(pixels, pre), rng.standard_normal((n, 3, h, w), dtype=np.float32)])
                self._cache[key] = (x, x)
        artifact_input, reference_input = self._cache[key]
        return artifact_input, reference_input, key


def tolerance_class(manifest: Manifest) -> str:
    """The profile's tolerance class for an artifact: its quantization mode's class, else its precision."""
    from .quantize import tolerance_class as mode_class

    if manifest.quantization is not None:
        return mode_class(manifest.target, manifest.quantization.mode)
    return manifest.precision


def _profile(manifest: Manifest) -> tuple[TargetProfile, bool]:
    """The profile a manifest names, else its target's default profile; and whether it was the named one."""
    try:
        return resolve_target(manifest.profile), True
    except (UsageError, InputError):
        return resolve_target(manifest.target), False  # a backend's name stands for its default profile


def profile_of(manifest: Manifest) -> TargetProfile:
    """The profile a manifest names, else (a user's profile not found here) its target's default profile."""
    return _profile(manifest)[0]


def _tolerance(manifest: Manifest, where: Path, overrides: dict) -> tuple[Tolerance, str, str]:
    """(the tolerance an artifact is judged by, where it comes from, a note for the reason).

    The manifest's own record of the export profile's tolerances comes first; a manifest without one (exported
    before they were recorded) falls back to the profile it names, then to its target's default profile.
    ``overrides`` (the command line's) apply on top of either. Every field is checked against its bounds."""
    name = tolerance_class(manifest)
    recorded = manifest.tolerances or {}
    if name in recorded:
        tolerance, source, note = recorded[name], "manifest", ""
        problem_at = f"{where}: tolerances.{name}"
    else:
        profile, named = _profile(manifest)
        tolerance, source = profile.tolerance(name), f"profile {profile.name}"
        why = ("the manifest records no tolerances (exported by an older shvit-edge)" if manifest.tolerances is None
               else f"the manifest records no {name} tolerances")
        by = f"profile {profile.name}" if named else \
            f"the default profile {profile.name} (profile {manifest.profile} not found)"
        note = f"{why}: judged by the {name} tolerances of {by}. "
        problem_at = f"{profile.source or profile.name}: tolerances.{name}"
    for key, (bounds, _) in TOLERANCE_BOUNDS.items():
        value = getattr(tolerance, key)
        if value is not None:
            bounds.check(f"{problem_at}.{key}", value, error=InputError)
    tolerance = dataclasses.replace(tolerance, **{k: v for k, v in overrides.items() if v is not None})
    return tolerance, source, note


def judged_by(manifest: Manifest, where: Path, overrides: dict | None = None) -> tuple[Tolerance, dict]:
    """The tolerance an artifact is judged by (as verify judges it) and its JSON record (class, fields, source)."""
    tolerance, source, _ = _tolerance(manifest, where, overrides or {})
    return tolerance, _tolerance_json(tolerance, tolerance_class(manifest), source)


def reference_space(manifest: Manifest, reference: np.ndarray) -> np.ndarray:
    """The reference model's logits in the space of the artifact's compared (first float32) output: probabilities
    for a Core ML classifier's output, the logits themselves otherwise."""
    output = next(o for o in manifest.outputs if o.dtype == "float32")
    return _softmax(reference) if output.layout == "classifier" else reference


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _tolerance_json(tolerance: Tolerance, precision_class: str, source: str) -> dict:
    return {"class": precision_class, **dataclasses.asdict(tolerance), "source": source}


def _integrity(artifact: Path, manifest: Manifest) -> str | None:
    """Why the artifact is not the file its manifest describes (None: it is). Raises :class:`InputError` for
    anything that is no regular file or folder of regular files (:func:`~shvit_edge.atomic.sha256_of`)."""
    method, expected = manifest.artifact.sha256_method, manifest.artifact.sha256
    if method == LEGACY_FOLDER_SHA256_METHOD:
        return ("the manifest records the old unframed .mlpackage digest (schema 1), which two different packages "
                "can share, so it proves nothing; re-export the artifact with this shvit-edge")
    if method not in (FILE_SHA256_METHOD, FOLDER_SHA256_METHOD):
        return f"the manifest's sha256_method {method!r} is not one this shvit-edge checks; re-export the artifact"
    kind = FOLDER_SHA256_METHOD if artifact.is_dir() else FILE_SHA256_METHOD
    if method != kind:
        return (f"the artifact is a {'folder' if artifact.is_dir() else 'file'}; its manifest's sha256 is of a "
                f"{'file' if artifact.is_dir() else 'folder'}")
    sha = sha256_of(artifact)
    if sha != expected:
        return f"sha256 mismatch: the file's is {sha}, the manifest says {expected}; the artifact changed after export"
    return None


@dataclass
class _Plan:
    """What is settled about an artifact before anything runs."""

    manifest: Manifest
    tolerance: Tolerance
    tolerance_json: dict
    note: str
    integrity: str | None


def verify(paths, options: VerifyOptions, progress: Progress | None = None,
           warn: Warn | None = None) -> list[VerifyResult]:
    """Verify every artifact found in ``paths``; one result per artifact and runtime setting.

    ``progress`` is told what runs; ``warn`` what went wrong besides the results (a manifest that could not be
    updated: the result stands, unrecorded), by default this module's logger. Bad options, missing extras,
    artifacts that are no regular files and bad tolerances raise before anything runs."""
    from .backends.base import require
    from .images import list_images

    progress = progress or (lambda message: None)
    warn = warn or _log.warning
    check_options(options)
    images = list_images(options.images) if options.images is not None else []
    if not images and options.samples == 0:
        raise UsageError("nothing to compare on: give --images, or --samples above 0")
    artifacts = find_artifacts(paths)
    manifests = {a: read_manifest(manifest_path(a)) for a in artifacts}
    for manifest in manifests.values():
        require(manifest.target)  # a missing extra is a usage error before anything runs
    plans = {}
    for artifact, manifest in manifests.items():
        tolerance, source, note = _tolerance(manifest, manifest_path(artifact), options.overrides)
        plans[artifact] = _Plan(manifest, tolerance, _tolerance_json(tolerance, tolerance_class(manifest), source),
                                note, _integrity(artifact, manifest))
    references, inputs = References(options), Inputs(options, images)
    results: list[VerifyResult] = []
    for artifact, plan in plans.items():
        progress(f"verifying {artifact.name} ...")
        found, source = _verify_artifact(artifact, plan, options, references, inputs, progress)
        try:
            _record(artifact, plan.manifest, found, options, images, source,
                    verified_sha256=plan.manifest.artifact.sha256 if plan.integrity is None else None)
        except OSError as exc:
            warn(f"{manifest_path(artifact)}: the manifest could not be updated with the result "
                 f"({exc.strerror or exc}); the result is reported, not recorded")
        results.extend(found)
    return results


def _verify_artifact(artifact: Path, plan: _Plan, options: VerifyOptions, references: References,
                     inputs: Inputs, progress: Progress) -> tuple[list[VerifyResult], object]:
    """The results of one artifact, and the reference source they were judged against (None if none was)."""
    manifest, note = plan.manifest, plan.note
    base = dict(artifact=str(artifact), target=manifest.target, tolerances=plan.tolerance_json)
    if plan.integrity is not None:
        return [VerifyResult(**base, runtime="none", status=FAIL, metrics={}, reason=note + plan.integrity)], None

    x, x_ref, inputs_key = inputs.get(manifest, image_input=manifest.inputs[0].kind == "image")
    from .backends.base import get_backend
    from .verify_worker import RuntimeChild

    backend = get_backend(manifest.target)
    settings = [s for s in backend.runtime_settings(_profile(manifest)[0]) if s is not None]
    settings += [s for s in options.runtimes if s in backend.interpreters and s not in settings]
    units = settings or None

    with RuntimeChild.start(artifact, manifest, x, options.threads, units) as child:
        # the reference is computed while the child loads its runtime
        key, source = references.source(manifest, artifact)
        if manifest.checkpoint.sha256 and source.checkpoint.sha256 and \
                source.checkpoint.sha256 != manifest.checkpoint.sha256:
            note += "the reference checkpoint is not the file it was exported from (sha256 differs). "
        reference = references.outputs(key, source, x_ref, inputs_key)
        if units and len(units) > 1:
            progress(f"verifying {artifact.name} on {backend.title} ({', '.join(units)}) ...")
        report = child.wait()
    output = next(o for o in manifest.outputs if o.dtype == "float32")
    reference = reference_space(manifest, reference)
    counts = f"{len(inputs.images)} images + {options.samples} random inputs"
    _check_against_reference(report, source, manifest)
    return _results(report, manifest, base, note, reference, plan.tolerance, output.name, counts), source


def _check_against_reference(report, source, manifest: Manifest) -> None:
    """Adds to the child's structural problems what the backend finds comparing the weights the child read
    (``weights_for_reference``) with the reference model (``reference_problems``): e.g. Core ML's 1/std fold."""
    from .backends.base import get_backend

    structure = report.status.get("structure")
    arrays = (structure or {}).get("arrays") or {}
    backend = get_backend(manifest.target)
    if not backend.has_reference_check or not arrays or structure["problems"]:
        return
    found = backend.reference_problems({k: report.output(v) for k, v in arrays.items()}, source, manifest)
    structure["problems"].extend(found)
    if not found:
        structure["facts"]["matching the reference model:"] = ", ".join(arrays)


def _results(report, manifest: Manifest, base: dict, note: str, reference: np.ndarray, tolerance: Tolerance,
             output: str, counts: str) -> list[VerifyResult]:
    """The results a child's report makes: its structural check, its skip, or each run judged."""
    structure = f"{manifest.target} (structure)"
    status = report.status
    if status["structure"] is not None and status["structure"]["problems"]:
        return [VerifyResult(**base, runtime=structure, status=FAIL, metrics={},
                             reason=note + "structural check failed: " + "; ".join(status["structure"]["problems"]))]
    if status["cannot_run_here"] is not None:
        facts = (status["structure"] or {}).get("facts", {})
        checked = "; ".join(f"{k} {v}" for k, v in facts.items())
        return [VerifyResult(**base, runtime=structure, status=SKIPPED, metrics={},
                             reason=note + f"not run: {status['cannot_run_here']}; structural check passed (loads; "
                             f"I/O matches the manifest; {checked})")]
    found = []
    spec = manifest.inputs[0]
    checked = {"structure": status["structure"]["facts"]} if status["structure"] is not None else {}
    for run in status["runs"]:
        runtime = run["runtime"]
        if run["error"] is not None:
            reason = f"the runtime failed: {run['error']}"
        elif run["input"] is not None and input_mismatch(run["input"]["shape"], run["input"]["dtype"], spec):
            got = run["input"]
            reason = (f"the artifact takes {got['name']} {tuple(got['shape'])} {got['dtype']}; its manifest says "
                      f"{spec.shape} {spec.dtype}")
        elif run["output"] is None:
            reason = report.ended()
        else:
            try:
                metrics = compare(report.output(run["output"]), reference)
            except Exception as exc:  # noqa: BLE001 - an output that cannot be compared is this run's result
                reason = f"the runtime failed: {describe_exception(exc)}"
            else:
                problems = judge(metrics, tolerance)
                details = {**checked, **(run.get("details") or {})}
                headroom = details.get("fp16_headroom")
                said = ""
                if headroom is not None:
                    problems += fp16_overflows(headroom)
                    said = f"; {fp16_headroom_summary(headroom)}" if headroom.get("least") else ""
                found.append(VerifyResult(
                    **base, runtime=runtime, status=FAIL if problems else PASS, metrics={output: metrics.as_dict()},
                    reason=note + ("; ".join(problems) if problems else f"within tolerance on {counts}") + said,
                    details=details))
                continue
        found.append(VerifyResult(**base, runtime=runtime, status=FAIL, metrics={}, reason=note + reason))
    if not found:  # the child ended before any run: in its structural check, or before it
        runtime = structure if status["structure"] is None and "structural" in status["stage"] else manifest.target
        error = status["error"]
        reason = f"the runtime failed: {error}" if error else report.ended()
        found.append(VerifyResult(**base, runtime=runtime, status=FAIL, metrics={}, reason=note + reason))
    return found


def fp16_overflows(headroom: dict) -> list[str]:
    """A problem per op whose float16 output overflowed (values beyond 65504 became inf), from an interpreter's
    ``fp16_headroom`` report."""
    ops = {op["op"]: op for op in headroom.get("ops", [])}
    found = []
    for name in headroom.get("overflowing", []):
        op = ops.get(name, {})
        found.append(f"fp16 overflow: op {name} ({op.get('type')}) produced {op.get('overflow')} values beyond "
                     f"65504 (inf on a device computing in fp16)")
    first = headroom.get("first_nonfinite")
    if first and first not in headroom.get("overflowing", []):
        found.append(f"op {first} ({ops.get(first, {}).get('type')}) is the first to produce NaN or inf from "
                     f"finite inputs")
    return found


def fp16_headroom_summary(headroom: dict) -> str:
    """One line on the fp16 op with the least headroom."""
    least = headroom.get("least")
    if least is None:
        return "no fp16 ops"
    margin = least.get("margin")
    times = "no values" if margin is None else f"{margin:.3g}x under 65504"
    flushed = f", {least['flushed_fraction']:.1%} flushed to zero" if least.get("flushed_fraction") else ""
    return (f"least fp16 headroom: op {least['op']} ({least['type']}) max |x| {least['max_abs']:.4g} "
            f"({times}{flushed})")


def _record(artifact: Path, manifest: Manifest, results: list[VerifyResult], options: VerifyOptions,
            images: list[Path], source, verified_sha256: str | None = None) -> None:
    """Write the results into the manifest's ``verification`` section (atomically). ``verified_sha256``: the
    sha256 of the file that was run (None when it failed its integrity check), so a reader can tell whether
    the results are of the artifact it has: a manifest's own sha256 can be rewritten along with the file."""
    verification = {
        "shvit_edge_version": __version__,
        "artifact_sha256": verified_sha256,
        "verified_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "inputs": {"images": [p.name for p in images], "random": options.samples, "seed": options.seed},
        "reference": None if source is None else dataclasses.asdict(source.checkpoint),
        "results": [{k: v for k, v in r.as_json().items() if k != "artifact"} for r in results],
    }
    path = manifest_path(artifact)
    with atomic_outputs(path, overwrite=True) as (tmp,):
        tmp.write_text(dataclasses.replace(manifest, verification=verification).to_json(), encoding="utf-8")
