"""The manifest beside every artifact (``<artifact>.json``): what the artifact is, where it came from, and how
to feed it. Metadata travels here, never in a file name.

A manifest is a frozen dataclass; :func:`read_manifest` validates a file back into one, strictly: types, keys,
the numbers' declared :mod:`~shvit_edge.bounds`, the names verify and bench act on (backend, precision,
quantization mode, tolerance classes, a plain artifact file name and profile name), and what verify needs (an
input, a float32 output). A file over :data:`MAX_MANIFEST_BYTES`, a FIFO or a device, JSON nested deeper than
:data:`~shvit_edge._strict.MAX_DEPTH`, NaN or infinities anywhere and duplicate keys are refused first. Every
refusal is a one-line :class:`~shvit_edge.errors.InputError`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ._strict import check_tree, decode_text, from_mapping, key_name, quoted, read_capped
from .bounds import (BATCH, CALIBRATION_SAMPLES, DIMENSION, NONNEGATIVE_SECONDS, NUM_CLASSES, RESOLUTION_SIDE,
                     SIZE_BYTES, Bounds)
from .errors import InputError
from .backends.registry import backends
from .models.source import CheckpointRef
from .targets import PRECISIONS, Tolerance, is_plain_name, tolerance_classes

#: 2: ``tolerances`` recorded at export, and an ``.mlpackage`` digest that frames each file (atomic.py)
SCHEMA_VERSION = 2
#: schema versions this shvit-edge reads
READABLE_SCHEMA_VERSIONS = (1, 2)
MANIFEST_SUFFIX = ".json"
#: a manifest larger than this is refused before it is read (one is a few KB; verify's results add a few more)
MAX_MANIFEST_BYTES = 16 << 20
#: images a calibrated mode used (none for a mode without calibration)
CALIBRATION_COUNT = Bounds(0, CALIBRATION_SAMPLES.hi, integer=True)
#: the shorter side an image is resized to before the centre crop (0 would divide by zero in images.py)
RESIZE = Bounds(1, 2 * RESOLUTION_SIDE.hi, integer=True)
#: a deploy model's parameter count or MACs per image
MODEL_COUNT = Bounds(1, 1 << 60, integer=True)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...] = field(metadata=DIMENSION.meta)
    dtype: str
    #: ``NCHW`` / ``NHWC`` for images and image tensors, ``NC`` for logits, ``classifier`` for a Core ML
    #: classifier output (a label and a label-to-probability dictionary).
    layout: str
    #: ``tensor`` or ``image`` (a Core ML RGB image input, 0..255 pixels)
    kind: str = "tensor"
    #: ``dynamic`` axes by index (e.g. ``(0,)`` for a dynamic batch); their ``shape`` entry is the example size
    dynamic_axes: tuple[int, ...] = ()


#: the colour orders images are read in (Pillow's modes) and where normalization happens
COLORS = ("RGB",)
APPLIED = ("none", "in-model")


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB image in 0..255 becomes the input tensor: ``(pixel * scale - mean) / std``, per channel,
    after resizing (bicubic, aspect kept) so the image covers H x W scaled by ``resize / min(H, W)`` — for a
    square input, the shorter side to ``resize`` — and centre-cropping to the input's H x W
    (:mod:`shvit_edge.images`)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scale: float
    resize: int = field(metadata=RESIZE.meta)
    color: str = "RGB"
    #: What the artifact itself does of it: ``none`` (feed normalized tensors) or ``in-model`` (Core ML image
    #: input: scale and -mean in the image input's bias, 1/std folded into the first conv)
    applied: str = "none"


@dataclass(frozen=True)
class Quantization:
    #: the --quantize mode, e.g. ``int8`` (static, calibrated) or ``int8-dynamic``
    mode: str
    #: the calibration image folder, ``random``, or None for a mode without calibration
    calibration: str | None = None
    calibration_count: int = field(default=0, metadata=CALIBRATION_COUNT.meta)
    #: deploy-model layers left in float (``--keep-float``)
    keep_float: tuple[str, ...] = ()
    #: how many of the ``calibration_count`` inputs were random crops and flips of the images (absent: none)
    calibration_augmented: int = field(default=0, metadata=CALIBRATION_COUNT.meta)
    #: the quantizer's range estimation (``--calibration-method``: e.g. ``histogram``, ``minmax``), None if
    #: the record predates it or the mode has none
    calibration_method: str | None = None
    #: data-free transforms applied to the deploy model before quantizing (``--dfq``), e.g.
    #: ``("bias-correction",)``
    transforms: tuple[str, ...] = ()


@dataclass(frozen=True)
class ArtifactRef:
    file: str
    sha256: str
    sha256_method: str
    size_bytes: int = field(metadata=SIZE_BYTES.meta)


@dataclass(frozen=True)
class Manifest:
    schema_version: int
    shvit_edge_version: str
    target: str
    profile: str
    variant: str
    resolution: tuple[int, int] = field(metadata=RESOLUTION_SIDE.meta)
    batch: int = field(metadata=BATCH.meta)
    num_classes: int = field(metadata=NUM_CLASSES.meta)
    distillation: bool
    checkpoint: CheckpointRef
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    preprocessing: Preprocessing
    precision: str
    quantization: Quantization | None
    versions: dict[str, str]
    artifact: ArtifactRef
    export_seconds: float = field(metadata=NONNEGATIVE_SECONDS.meta)
    untrained: bool = False
    labels: str = "indices"
    #: backend-specific facts, e.g. ExecuTorch's ``delegation`` or Core ML's deployment target
    details: dict = field(default_factory=dict)
    #: filled in by ``shvit-edge verify``
    verification: dict | None = None
    #: the profile's tolerance classes at export (a user's own profile included): what ``verify`` judges by
    tolerances: dict[str, Tolerance] | None = None
    #: the registered model family of ``variant`` (absent from manifests that predate families: SHViT)
    family: str = "shvit"
    #: parameters and MACs (one image at ``resolution``) of the deploy model, measured at export; None in a
    #: manifest that predates them (bench then measures the family's model itself)
    params: int | None = field(default=None, metadata=MODEL_COUNT.meta)
    macs: int | None = field(default=None, metadata=MODEL_COUNT.meta)

    def to_json(self) -> str:
        """The manifest as JSON; a NaN or an infinity anywhere is a ValueError (:func:`read_manifest` refuses
        them: never write a manifest that cannot be read back)."""
        return json.dumps(dataclasses.asdict(self), indent=2, allow_nan=False) + "\n"


def manifest_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + MANIFEST_SUFFIX)


def read_manifest(path: Path) -> Manifest:
    """Read and validate a manifest file (strict: unknown or missing keys, wrong types, numbers outside their
    bounds and names verify cannot act on are one-line InputErrors naming the file and the key)."""
    path = Path(path)
    raw = read_capped(path, MAX_MANIFEST_BYTES, "manifest")
    try:
        text = decode_text(raw)
        data = json.loads(text, object_pairs_hook=lambda pairs: _object(pairs, path))
    except RecursionError:
        raise InputError(f"{path}: manifest is not valid JSON (nested too deeply)") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, or an integer of over 4300 digits
        raise InputError(f"{path}: manifest is not valid JSON ({' '.join(str(exc).split())})") from None
    # a lone surrogate can only come from a \uD800-\uDFFF escape: strings are checked when the text has one
    check_tree(data, path, text=_SURROGATE_ESCAPE.search(text) is not None)
    manifest = from_mapping(Manifest, data, path)
    if manifest.schema_version not in READABLE_SCHEMA_VERSIONS:
        raise InputError(f"{path}: manifest schema_version {quoted(manifest.schema_version)} is not supported "
                         f"(this shvit-edge reads {', '.join(map(str, READABLE_SCHEMA_VERSIONS))})")
    _check(manifest, path)
    return manifest


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _object(pairs: list, path: Path) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise InputError(f"{path}: the key {key_name(duplicate)} appears twice in one object")
    return obj


def is_plain_file_name(text: str) -> bool:
    """A file name, not a path: not empty, no ``/``, ``\\``, NUL or ``..``, not ``.``."""
    return bool(text) and text != "." and ".." not in text and not any(c in text for c in "/\\\0")


def _check(m: Manifest, path: Path) -> None:
    """What the types do not say: the names verify and bench act on, and what verify needs."""
    known = backends()
    if m.target not in known:
        raise InputError(f"{path}: target {quoted(m.target)} is not one of {', '.join(known)}")
    if not is_plain_name(m.family):
        raise InputError(f"{path}: family {quoted(m.family)} is not a plain model family name")
    if not is_plain_name(m.profile):
        raise InputError(f"{path}: profile {quoted(m.profile)} is not a plain profile name")
    if m.precision not in PRECISIONS:
        raise InputError(f"{path}: precision {quoted(m.precision)} is not one of {', '.join(PRECISIONS)}")
    if m.quantization is not None and known[m.target].mode(m.quantization.mode) is None:
        raise InputError(f"{path}: quantization.mode {quoted(m.quantization.mode)} is not one of "
                         f"{', '.join(q.name for q in known[m.target].quantization_modes)}")
    if m.preprocessing.color not in COLORS:
        raise InputError(f"{path}: preprocessing.color {quoted(m.preprocessing.color)} is not one of "
                         f"{', '.join(COLORS)}")
    if m.preprocessing.applied not in APPLIED:
        raise InputError(f"{path}: preprocessing.applied {quoted(m.preprocessing.applied)} is not one of "
                         f"{', '.join(APPLIED)}")
    if not is_plain_file_name(m.artifact.file):
        raise InputError(f"{path}: artifact.file {quoted(m.artifact.file)} is not a plain file name")
    if not m.inputs:
        raise InputError(f"{path}: inputs is empty; an artifact has at least one input")
    if not any(o.dtype == "float32" for o in m.outputs):
        raise InputError(f"{path}: outputs has no float32 output (verify compares one)")
    for side, specs in (("inputs", m.inputs), ("outputs", m.outputs)):
        for i, spec in enumerate(specs):
            bad = [a for a in spec.dynamic_axes if not 0 <= a < len(spec.shape)]
            if bad:
                raise InputError(f"{path}: {side}[{i}].dynamic_axes: {quoted(bad[0])} is not an axis of its shape "
                                 f"{list(spec.shape)}")
    if m.tolerances is not None:
        classes = tolerance_classes()
        unknown = [k for k in m.tolerances if k not in classes]
        if unknown:
            raise InputError(f"{path}: unknown tolerance class tolerances.{key_name(unknown[0])} (known: "
                             f"{', '.join(classes)})")
