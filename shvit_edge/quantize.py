"""Quantization: each backend's modes (declared by the backend), calibration inputs, and the tolerance class
verify judges each mode by.

Each backend quantizes with its own maintained tooling (ExecuTorch: PT2E with the XNNPACK quantizer; TFLite:
litert-torch and ai-edge-quantizer; Core ML: coremltools.optimize; ONNX: onnxruntime.quantization). A
calibrated mode gets its inputs from an image folder (sorted by name, the first ``count``, preprocessed
exactly as verify does) or, with a warning, from seeded random inputs, and feeds them in the artifact's batch
through :func:`calibration_batches`, which reports progress.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from .backends.registry import backends, get_backend
from .errors import UsageError

DEFAULT_CALIBRATION_SAMPLES = 32
#: ``--dfq`` choices: the data-free transforms (:mod:`shvit_edge.models.dfq`) applied before int8 quantization.
#: Each backend says which one ``--dfq default`` means (``Backend.dfq_default``: none on every backend, as
#: measured by benchmarks/int8_ladder.py on shvit_s1_calibrated: no transform gained more than 0.1 dB)
DFQ_CHOICES: dict[str, tuple[str, ...]] = {
    "none": (), "cle": ("cross-layer-equalization",), "bias-correction": ("bias-correction",),
    "cle+bias-correction": ("cross-layer-equalization", "bias-correction"),
}


def modes(backend: str) -> tuple[str, ...]:
    """The ``--quantize`` modes ``backend`` offers (its ``quantization_modes``)."""
    return tuple(m.name for m in get_backend(backend).quantization_modes)


def tolerance_class(backend: str, mode: str) -> str:
    """The profile tolerance class verify judges a ``backend`` artifact quantized with ``mode`` by."""
    found = get_backend(backend).mode(mode)
    if found is None:
        raise UsageError(f"--quantize {mode} is not a {backend} mode (those are: {', '.join(modes(backend))})")
    return found.tolerance_class


def tolerance_classes() -> tuple[str, ...]:
    """Every registered backend's quantization tolerance classes."""
    return tuple(dict.fromkeys(m.tolerance_class for b in backends().values() for m in b.quantization_modes))


def is_calibrated(backend: str, mode: str | None) -> bool:
    """Whether ``mode`` on ``backend`` needs calibration inputs."""
    found = get_backend(backend).mode(mode) if mode else None
    return found is not None and found.calibrated


def calibrated_modes() -> tuple[str, ...]:
    """The modes that are calibrated on some backend (for messages)."""
    return tuple(dict.fromkeys(m.name for b in backends().values() for m in b.quantization_modes if m.calibrated))


def resolve_calibration_method(backend: str, mode: str | None, method: str | None) -> str | None:
    """The range estimation a ``--quantize mode`` export to ``backend`` uses: ``method`` checked against the
    backend's choices (``calibration_methods``), or its default; None for a mode or backend without a choice."""
    choices = get_backend(backend).calibration_methods if mode == "int8" else ()
    if not choices:
        if method is not None:
            offering = [name for name, b in backends().items() if b.calibration_methods]
            raise UsageError(f"--calibration-method applies to --quantize int8 on {', '.join(offering)}")
        return None
    if method is None:
        return choices[0]
    if method not in choices:
        raise UsageError(f"--calibration-method {method}: {backend} offers {', '.join(choices)}")
    return method


def resolve_dfq(backend: str, mode: str | None, choice: str) -> tuple[str, ...]:
    """The data-free transforms a ``--quantize mode`` export to ``backend`` applies for ``--dfq choice``
    (``default``: the backend's ``dfq_default``); none outside ``int8`` or on a backend without transforms."""
    if choice != "default" and choice not in DFQ_CHOICES:
        raise UsageError(f"--dfq must be one of default, {', '.join(DFQ_CHOICES)}")
    default = get_backend(backend).dfq_default
    if mode != "int8" or default is None:
        return ()
    return DFQ_CHOICES[default if choice == "default" else choice]


@dataclass(frozen=True)
class Calibration:
    inputs: np.ndarray  # float32 (N, 3, H, W), normalized
    source: str  # the folder, or "random"
    count: int  # inputs in all, the augmented ones included
    #: how many of them are random crops and flips of the folder's images (the rest are the images as they are)
    augmented: int = 0


def check_mode(profile, mode: str) -> None:
    """A usage error unless ``profile`` (a :class:`~shvit_edge.targets.TargetProfile`) takes ``mode``: the
    message lists the modes it does take, or says which deployment target a mode needs."""
    backend = profile.backend
    owner = get_backend(backend)
    found = owner.mode(mode)
    needs = found.min_deployment_target if found is not None else None
    has = profile.export.minimum_deployment_target
    if needs and _os_version(has or "iOS16") < _os_version(needs):
        why = f" ({found.needs_why})" if found.needs_why else ""
        raise UsageError(f"--quantize {mode} needs {owner.title} deployment target {needs} or newer{why}; target "
                         f"{profile.name} deploys to {has or 'iOS16'}. Use a profile with minimum_deployment_target = "
                         f"\"{needs}\" for devices that run it")
    offered = [m for m in modes(backend) if m in profile.export.quantization]
    if mode not in offered:
        raise UsageError(f"target {profile.name} ({backend}) does not offer --quantize {mode}; it offers: "
                         f"{', '.join(offered) or 'none'}")


def _os_version(target: str) -> tuple[int, ...]:
    """``iOS17`` -> (17,), ``macOS13`` -> (13,); anything else sorts first."""
    found = re.search(r"(\d+(?:\.\d+)*)$", target)
    return tuple(int(p) for p in found.group(1).split(".")) if found else (0,)


def calibration_inputs(spec: str, count: int, resolution: tuple[int, int], preprocessing,
                       seed: int = 0, augment: bool = True,
                       progress: Callable[[str], None] | None = None) -> Calibration:
    """``count`` calibration inputs from the image folder ``spec`` or, for ``spec == "random"``, seeded
    standard-normal inputs (the CLI warns: they calibrate ranges no real image has).

    From a folder: its first ``count`` images by name, each exactly as verify preprocesses it; with ``augment``
    and fewer images than ``count``, the rest are seeded random resized crops and horizontal flips of those
    images (:func:`~shvit_edge.images.augmented_pixels`), reported to ``progress`` with a bar. Quantizers set
    activation ranges from what they see, and five photos show them little of what a deployed model sees."""
    from .images import augmented_pixels, list_images, load_pixels, normalize

    if count < 1:
        raise UsageError(f"--calibration-samples must be at least 1, got {count}")
    h, w = resolution
    if spec == "random":
        rng = np.random.default_rng(seed)
        return Calibration(rng.standard_normal((count, 3, h, w), dtype=np.float32), "random", count)
    images = list_images(spec, "--calibration", limit=count)
    pixels = load_pixels(images, resolution, preprocessing)
    extra = count - len(images) if augment else 0
    if extra > 0:
        def report(done: int, total: int) -> None:
            if progress is not None:
                bar = round(20 * done / total)
                progress(f"augmenting calibration [{'#' * bar}{'.' * (20 - bar)}] {done}/{total} crops of "
                         f"{len(images)} images")

        pixels = np.concatenate([pixels, augmented_pixels(images, resolution, preprocessing, extra, seed=seed,
                                                          progress=report)])
    x = normalize(pixels, preprocessing)
    return Calibration(x, str(spec), len(x), augmented=max(extra, 0))


def calibration_batches(calibration: Calibration, batch: int,
                        progress: Callable[[str], None] | None = None) -> Iterator[np.ndarray]:
    """The calibration inputs in chunks of the artifact's fixed ``batch`` (the last chunk padded with the first
    inputs), in order, reporting ``calibrating i/n`` with a bar to ``progress`` before each chunk."""
    x = calibration.inputs
    if len(x) % batch:
        x = np.concatenate([x, np.resize(x, (batch - len(x) % batch, *x.shape[1:]))])
    chunks = len(x) // batch
    for i in range(chunks):
        if progress is not None:
            done = round(20 * i / chunks)
            progress(f"calibrating [{'#' * done}{'.' * (20 - done)}] {i * batch}/{calibration.count} inputs "
                     f"({calibration.source})")
        yield x[i * batch:(i + 1) * batch]



def quantizable_layers(model) -> list[str]:
    """The module names of the deploy model's convs and linears, in forward order: the layers quantization
    acts on, and the names ``--keep-float`` and the sensitivity report use."""
    import torch.nn as nn

    return [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def check_keep_float(model, names: tuple[str, ...]) -> None:
    """A usage error naming any ``--keep-float`` layer that is not a conv or linear of ``model``."""
    known = quantizable_layers(model)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"--keep-float {unknown[0]}: no such layer; layers are the deploy model's convs and "
                         f"linears, as `shvit-edge quantize-report` lists them (e.g. {', '.join(known[:3])}, ..., "
                         f"{known[-1]})")
