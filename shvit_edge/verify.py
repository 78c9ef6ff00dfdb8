"""Verify: run each artifact in the runtime that ships it and compare it with the PyTorch model it came from.

:func:`verify` is the library entry point behind ``shvit-edge verify``. For every artifact it checks the
file's sha256 against the manifest before anything runs, rebuilds the reference model from the manifest's
checkpoint (or ``--checkpoint``), feeds both the same inputs (real images preprocessed as the manifest says,
plus seeded random ones), and judges the metrics against the target profile's tolerances for the artifact's
precision. Core ML runs only on Apple hardware; elsewhere its package gets a structural check and the result
``skipped``, never a silent pass. Each result is also written into the manifest's ``verification`` section.
"""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import __version__
from .atomic import TMP_PREFIX, atomic_outputs, sha256_of
from .errors import InputError, UsageError
from .manifest import MANIFEST_SUFFIX, Manifest, manifest_path, read_manifest
from .parity.metrics import ParityMetrics, compare
from .targets import DEFAULT_PROFILES, TargetProfile, Tolerance, resolve_target

PASS, FAIL, SKIPPED = "pass", "fail", "skipped"
TOLERANCE_FLAGS = ("cosine", "max_abs", "top1_agreement", "sqnr_db")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class VerifyOptions:
    images: str | None = None
    samples: int = 8
    seed: int = 0
    checkpoint: str | None = None
    trust_checkpoint: bool = False
    #: tolerance fields (see :class:`~shvit_edge.targets.Tolerance`) that replace the profile's
    overrides: dict = field(default_factory=dict)
    threads: int | None = None


@dataclass(frozen=True)
class VerifyResult:
    artifact: str
    target: str
    runtime: str
    status: str
    metrics: dict
    tolerances: dict
    reason: str

    def as_json(self) -> dict:
        return dataclasses.asdict(self)


def find_artifacts(paths) -> list[Path]:
    """Each PATH as an artifact (it has a manifest beside it) or a folder of artifacts (entries with a manifest
    beside them; anything else there is passed over)."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.name.endswith(MANIFEST_SUFFIX) and path.is_file() and \
                Path(str(path)[:-len(MANIFEST_SUFFIX)]).exists():
            path = Path(str(path)[:-len(MANIFEST_SUFFIX)])  # the manifest was given: verify its artifact
        if manifest_path(path).is_file():
            found.append(path)
        elif path.is_dir():
            inside = sorted(p for p in path.iterdir() if not p.name.startswith(TMP_PREFIX)
                            and not p.name.endswith(MANIFEST_SUFFIX) and manifest_path(p).is_file())
            if not inside:
                raise InputError(f"{path}: no artifacts in this folder (an artifact has its manifest, "
                                 f"<artifact>{MANIFEST_SUFFIX}, beside it)")
            found.extend(inside)
        elif path.exists():
            raise InputError(f"{path}: not an artifact of shvit-edge (no manifest {manifest_path(path).name} "
                             "beside it)")
        else:
            raise InputError(f"{path}: no such file or folder")
    return list(dict.fromkeys(found))


class _References:
    """Reference models and their outputs, loaded once per checkpoint and computed once per input set."""

    def __init__(self, options: VerifyOptions):
        self.options = options
        self._sources: dict = {}
        self._outputs: dict = {}

    def source(self, manifest: Manifest, artifact: Path):
        from .export import load_source

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
            if not Path(ref.path).is_file():
                raise InputError(f"{artifact}: its checkpoint {ref.path} (from the manifest) is not found; "
                                 "pass --checkpoint")
            key = ("checkpoint", ref.path, ref.use_ema)
            if key not in self._sources:
                self._sources[key] = load_source(variant=manifest.variant, checkpoint=ref.path, use_ema=ref.use_ema,
                                                 trust_checkpoint=self.options.trust_checkpoint)
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


class _Inputs:
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
    from .quantize import TOLERANCE_CLASS

    if manifest.quantization is not None:
        return TOLERANCE_CLASS[manifest.quantization.mode]
    return manifest.precision


def _profile(manifest: Manifest) -> tuple[TargetProfile, str]:
    try:
        return resolve_target(manifest.profile), ""
    except (UsageError, InputError):
        fallback = DEFAULT_PROFILES[manifest.target]
        return resolve_target(fallback), f"profile {manifest.profile} not found; tolerances from {fallback}. "


def _tolerance(manifest: Manifest, profile: TargetProfile, overrides: dict) -> Tolerance:
    tolerance = profile.tolerance(tolerance_class(manifest))
    return dataclasses.replace(tolerance, **{k: v for k, v in overrides.items() if v is not None})


def judge(metrics: ParityMetrics, tolerance: Tolerance) -> list[str]:
    """What in ``metrics`` breaks ``tolerance`` (empty: it passes)."""
    if not metrics.finite:
        return ["NaN or Inf in the output"]
    problems = []
    if metrics.cosine < tolerance.cosine:
        problems.append(f"cosine {metrics.cosine:.6f} < {tolerance.cosine}")
    if metrics.max_abs > tolerance.max_abs:
        problems.append(f"max abs {metrics.max_abs:.3g} > {tolerance.max_abs}")
    if metrics.top1_agreement < tolerance.top1_agreement:
        problems.append(f"top-1 agreement {metrics.top1_agreement:.3f} < {tolerance.top1_agreement}")
    if tolerance.sqnr_db is not None and metrics.sqnr_db < tolerance.sqnr_db:
        problems.append(f"SQNR {metrics.sqnr_db:.1f} dB < {tolerance.sqnr_db} dB")
    return problems


def _masked(shape, dynamic_axes) -> tuple[int | None, ...]:
    """``shape`` with its dynamic axes as None, so a runtime's shape and a manifest's compare."""
    return tuple(None if i in dynamic_axes else d for i, d in enumerate(shape))


def _run_batched(runner, x: np.ndarray, manifest: Manifest) -> np.ndarray:
    """Run ``x`` (N, 3, H, W) through ``runner`` in the artifact's batch, padding the last chunk."""
    spec = manifest.inputs[0]
    batch = x.shape[0] if spec.dynamic_axes else manifest.batch
    outs = []
    for start in range(0, x.shape[0], batch):
        chunk = x[start:start + batch]
        real = chunk.shape[0]
        if real < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], batch - real, axis=0)])
        if spec.layout == "NHWC":
            chunk = chunk.transpose(0, 2, 3, 1)
        outs.append(np.asarray(runner(np.ascontiguousarray(chunk)))[:real])
    return np.concatenate(outs)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _tolerance_json(tolerance: Tolerance, precision_class: str) -> dict:
    return {"class": precision_class, **dataclasses.asdict(tolerance)}


def verify(paths, options: VerifyOptions, progress: Progress | None = None) -> list[VerifyResult]:
    """Verify every artifact found in ``paths``; one result per artifact and runtime setting."""
    from .backends.base import require
    from .images import list_images

    progress = progress or (lambda message: None)
    if options.samples < 0:
        raise UsageError(f"--samples must be 0 or more, got {options.samples}")
    unknown = set(options.overrides) - set(TOLERANCE_FLAGS)
    if unknown:
        raise UsageError(f"unknown tolerance {sorted(unknown)[0]!r}")
    images = list_images(options.images) if options.images is not None else []
    if not images and options.samples == 0:
        raise UsageError("nothing to compare on: give --images, or --samples above 0")
    artifacts = find_artifacts(paths)
    manifests = {a: read_manifest(manifest_path(a)) for a in artifacts}
    for manifest in manifests.values():
        require(manifest.target)  # a missing extra is a usage error before anything runs
    references, inputs = _References(options), _Inputs(options, images)
    results: list[VerifyResult] = []
    for artifact, manifest in manifests.items():
        progress(f"verifying {artifact.name} ...")
        found, source = _verify_artifact(artifact, manifest, options, references, inputs, progress)
        _record(artifact, manifest, found, options, images, source)
        results.extend(found)
    return results


def _verify_artifact(artifact: Path, manifest: Manifest, options: VerifyOptions, references: _References,
                     inputs: _Inputs, progress: Progress) -> tuple[list[VerifyResult], object]:
    """The results of one artifact, and the reference source they were judged against (None if none was)."""
    from functools import partial

    from .backends.base import get_backend

    profile, note = _profile(manifest)
    precision_class = tolerance_class(manifest)
    tolerance = _tolerance(manifest, profile, options.overrides)
    backend = get_backend(manifest.target)
    base = dict(artifact=str(artifact), target=manifest.target,
                tolerances=_tolerance_json(tolerance, precision_class))

    sha = sha256_of(artifact)
    if sha != manifest.artifact.sha256:
        return [VerifyResult(**base, runtime="none", status=FAIL, metrics={},
                             reason=f"sha256 mismatch: the file's is {sha}, the manifest says "
                                    f"{manifest.artifact.sha256}; the artifact changed after export")], None

    key, source = references.source(manifest, artifact)
    if manifest.checkpoint.sha256 and source.checkpoint.sha256 and \
            source.checkpoint.sha256 != manifest.checkpoint.sha256:
        note += "the reference checkpoint is not the file it was exported from (sha256 differs). "
    x, x_ref, inputs_key = inputs.get(manifest, image_input=manifest.inputs[0].kind == "image")
    reference = references.outputs(key, source, x_ref, inputs_key)
    output = next(o for o in manifest.outputs if o.dtype == "float32")
    if output.layout == "classifier":
        reference = _softmax(reference)
    judged = partial(_run_and_judge, x=x, reference=reference, manifest=manifest, tolerance=tolerance, base=base,
                     output=output.name, note=note, counts=f"{len(inputs.images)} images + {options.samples} "
                                                              "random inputs")
    # a backend with a structural check has it first; one that cannot run here stops after it, skipped
    facts = {}
    if hasattr(backend, "structural_problems"):
        problems, facts = backend.structural_problems(artifact, manifest)
        if problems:
            return [VerifyResult(**base, runtime=f"{manifest.target} (structure)", status=FAIL, metrics={},
                                 reason=note + "structural check failed: " + "; ".join(problems))], source
    why_not = backend.cannot_run_here(artifact, manifest)
    if why_not is not None:
        checked = "; ".join(f"{k} {v}" for k, v in facts.items())
        return [VerifyResult(**base, runtime=f"{manifest.target} (structure)", status=SKIPPED, metrics={},
                             reason=note + f"not run: {why_not}; structural check passed (loads; I/O matches "
                             f"the manifest; {checked})")], source
    if manifest.target != "coreml":
        return [judged(partial(backend.load, artifact, manifest, options.threads))], source
    found = []
    for units in profile.export.compute_units or ("cpu_only",):
        progress(f"verifying {artifact.name} on Core ML ({units}) ...")
        found.append(judged(partial(backend.load, artifact, manifest, options.threads, compute_units=units)))
    return found, source


def _run_and_judge(load, x, reference, manifest: Manifest, tolerance: Tolerance, base: dict, output: str,
                   note: str, counts: str) -> VerifyResult:
    from .export import _describe

    runtime = manifest.target
    try:
        runner = load()
        runtime = runner.runtime
        spec = manifest.inputs[0]
        if (_masked(runner.input_shape, spec.dynamic_axes), runner.input_dtype) != \
                (_masked(spec.shape, spec.dynamic_axes), spec.dtype):
            return VerifyResult(**base, runtime=runtime, status=FAIL, metrics={},
                                reason=note + f"the artifact takes {runner.input_name} {runner.input_shape} "
                                f"{runner.input_dtype}; its manifest says {spec.shape} {spec.dtype}")
        out = _run_batched(runner, x, manifest)
        metrics = compare(out, reference)
    except Exception as exc:  # noqa: BLE001 - a runtime's own failure is this artifact's result
        return VerifyResult(**base, runtime=runtime, status=FAIL, metrics={},
                            reason=note + f"the runtime failed: {_describe(exc)}")
    problems = judge(metrics, tolerance)
    status = FAIL if problems else PASS
    reason = note + ("; ".join(problems) if problems else f"within tolerance on {counts}")
    return VerifyResult(**base, runtime=runtime, status=status, metrics={output: metrics.as_dict()}, reason=reason)


def _record(artifact: Path, manifest: Manifest, results: list[VerifyResult], options: VerifyOptions,
            images: list[Path], source) -> None:
    """Write the results into the manifest's ``verification`` section (atomically)."""
    verification = {
        "shvit_edge_version": __version__,
        "verified_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "inputs": {"images": [p.name for p in images], "random": options.samples, "seed": options.seed},
        "reference": None if source is None else dataclasses.asdict(source.checkpoint),
        "results": [{k: v for k, v in r.as_json().items() if k != "artifact"} for r in results],
    }
    path = manifest_path(artifact)
    with atomic_outputs(path, overwrite=True) as (tmp,):
        tmp.write_text(dataclasses.replace(manifest, verification=verification).to_json(), encoding="utf-8")
