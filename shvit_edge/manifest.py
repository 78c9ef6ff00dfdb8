"""The manifest beside every artifact (``<artifact>.json``): what the artifact is, where it came from, and how
to feed it. Metadata travels here, never in a file name.

A manifest is a frozen dataclass; :func:`read_manifest` validates a file back into one, strictly.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from ._strict import from_mapping
from .errors import InputError

SCHEMA_VERSION = 1
MANIFEST_SUFFIX = ".json"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str
    #: ``NCHW`` / ``NHWC`` for images and image tensors, ``NC`` for logits, ``classifier`` for a Core ML
    #: classifier output (a label and a label-to-probability dictionary).
    layout: str
    #: ``tensor`` or ``image`` (a Core ML RGB image input, 0..255 pixels)
    kind: str = "tensor"
    #: ``dynamic`` axes by index (e.g. ``(0,)`` for a dynamic batch); their ``shape`` entry is the example size
    dynamic_axes: tuple[int, ...] = ()


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB image in 0..255 becomes the input tensor: ``(pixel * scale - mean) / std``, per channel,
    after resizing (bicubic, aspect kept) so the image covers H x W scaled by ``resize / min(H, W)`` — for a
    square input, the shorter side to ``resize`` — and centre-cropping to the input's H x W
    (:mod:`shvit_edge.images`)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scale: float
    resize: int
    color: str = "RGB"
    #: What the artifact itself does of it: ``none`` (feed normalized tensors) or ``in-model`` (Core ML image
    #: input: scale and -mean in the image input's bias, 1/std folded into the first conv)
    applied: str = "none"


@dataclass(frozen=True)
class CheckpointRef:
    #: the path as given, or ``"untrained"``
    path: str
    sha256: str | None
    layout: str | None = None
    use_ema: bool = False
    #: the seed of an untrained model's initialisation, so a reference can be rebuilt
    seed: int | None = None


@dataclass(frozen=True)
class Quantization:
    #: the --quantize mode, e.g. ``int8`` (static, calibrated) or ``int8-dynamic``
    mode: str
    #: the calibration image folder, ``random``, or None for a mode without calibration
    calibration: str | None = None
    calibration_count: int = 0
    #: deploy-model layers left in float (``--keep-float``)
    keep_float: tuple[str, ...] = ()


@dataclass(frozen=True)
class ArtifactRef:
    file: str
    sha256: str
    sha256_method: str
    size_bytes: int


@dataclass(frozen=True)
class Manifest:
    schema_version: int
    shvit_edge_version: str
    target: str
    profile: str
    variant: str
    resolution: tuple[int, int]
    batch: int
    num_classes: int
    distillation: bool
    checkpoint: CheckpointRef
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    preprocessing: Preprocessing
    precision: str
    quantization: Quantization | None
    versions: dict[str, str]
    artifact: ArtifactRef
    export_seconds: float
    untrained: bool = False
    labels: str = "indices"
    #: backend-specific facts, e.g. ExecuTorch's ``delegation`` or Core ML's deployment target
    details: dict = field(default_factory=dict)
    #: filled in by ``shvit-edge verify``
    verification: dict | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"


def manifest_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + MANIFEST_SUFFIX)


def read_manifest(path: Path) -> Manifest:
    """Read and validate a manifest file (strict: unknown or missing keys and wrong types are errors)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read manifest ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: manifest is not valid JSON ({exc})") from None
    manifest = from_mapping(Manifest, data, path)
    if manifest.schema_version != SCHEMA_VERSION:
        raise InputError(f"{path}: manifest schema_version {manifest.schema_version} is not supported "
                         f"(this shvit-edge reads {SCHEMA_VERSION})")
    return manifest
