"""Deployment target profiles: device and OS facts, backend, precisions, harness settings and tolerances.

Profiles are data (``targets/*.toml``, shipped in the wheel as ``shvit_edge/_targets``); adding a phone needs
no Python change. A profile is read into frozen dataclasses and validated when read: a missing required key,
a value of the wrong type or an unknown key is an error that names the file and the key.

``--target`` takes a backend name (``coreml`` means ``iphone12-ios16``, ``executorch`` and ``tflite`` the
Android arm64 CPU profiles, ``onnx`` the host), a profile name, or a path to a user's own TOML file.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ._strict import from_mapping
from .errors import InputError, UsageError

BACKENDS = ("coreml", "executorch", "tflite", "onnx")
PRECISIONS = ("fp32", "fp16", "int8")
#: The profile each backend name stands for on the command line.
DEFAULT_PROFILES = {"coreml": "iphone12-ios16", "executorch": "android-arm64-executorch",
                    "tflite": "android-arm64-tflite", "onnx": "host-onnx"}


@dataclass(frozen=True)
class Device:
    name: str
    os: str
    arch: str
    soc: str = ""
    os_version: str = ""


@dataclass(frozen=True)
class ExportSettings:
    precision: str = "fp32"
    precisions: tuple[str, ...] = ("fp32",)
    quantization: tuple[str, ...] = ()
    minimum_deployment_target: str = ""
    compute_units: tuple[str, ...] = ()
    delegate: str = ""
    delegates: tuple[str, ...] = ()
    layouts: tuple[str, ...] = ("nchw",)
    opset: int = 18


@dataclass(frozen=True)
class Harness:
    warmup: int = 10
    iterations: int = 100


@dataclass(frozen=True)
class Tolerance:
    """What ``verify`` accepts of an artifact against its PyTorch model: cosine similarity at least ``cosine``,
    largest absolute difference at most ``max_abs``, arg-max agreement at least ``top1_agreement``, and (when
    set) SQNR at least ``sqnr_db``."""

    cosine: float
    max_abs: float
    top1_agreement: float
    sqnr_db: float | None = None


@dataclass(frozen=True)
class TargetProfile:
    name: str
    description: str
    backend: str
    device: Device
    export: ExportSettings = field(default_factory=ExportSettings)
    harness: Harness = field(default_factory=Harness)
    tolerances: dict[str, Tolerance] = field(default_factory=dict)
    source: str = ""

    def tolerance(self, precision: str) -> Tolerance:
        if precision not in self.tolerances:
            raise UsageError(f"target profile {self.name} has no tolerances for {precision} "
                             f"(it has: {', '.join(self.tolerances) or 'none'})")
        return self.tolerances[precision]


def profiles_dir() -> Path:
    """The shipped profiles: ``shvit_edge/_targets`` in a wheel, ``targets/`` in a source checkout."""
    packaged = Path(__file__).resolve().parent / "_targets"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "targets"


def available_profiles() -> dict[str, Path]:
    return {p.stem: p for p in sorted(profiles_dir().glob("*.toml"))}


def resolve_target(spec: str) -> TargetProfile:
    """A backend name, a profile name or a path to a TOML profile -> the validated profile."""
    text = str(spec).strip()
    if text in DEFAULT_PROFILES:
        text = DEFAULT_PROFILES[text]
    known = available_profiles()
    if text in known:
        return load_profile(known[text])
    path = Path(text).expanduser()
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise InputError(f"{path}: target profile file not found")
        return load_profile(path)
    raise UsageError(f"unknown target {spec!r}; choose a backend ({', '.join(BACKENDS)}, or 'all'), "
                     f"a profile ({', '.join(known)}) or a path to a profile .toml")


def load_profile(path: Path) -> TargetProfile:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read target profile ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid TOML ({exc})") from None
    profile = from_mapping(TargetProfile, data, path, exclude=("source",))
    from .quantize import TOLERANCE_CLASS

    classes = tuple(dict.fromkeys((*PRECISIONS, *TOLERANCE_CLASS.values())))
    unknown = [p for p in profile.tolerances if p not in classes]
    if unknown:
        raise InputError(f"{path}: unknown tolerance class [tolerances.{unknown[0]}] (known: a precision or a "
                         f"quantization class: {', '.join(classes)})")
    profile = dataclasses.replace(profile, source=str(path))
    _check(profile, path)
    return profile


def _check(profile: TargetProfile, path: Path) -> None:
    if profile.backend not in BACKENDS:
        raise InputError(f"{path}: backend {profile.backend!r} is not one of {', '.join(BACKENDS)}")
    ex = profile.export
    for p in (ex.precision, *ex.precisions):
        if p not in PRECISIONS:
            raise InputError(f"{path}: precision {p!r} is not one of {', '.join(PRECISIONS)}")
    if ex.precision not in ex.precisions:
        raise InputError(f"{path}: export.precision {ex.precision!r} is not in export.precisions")
    for precision in ex.precisions:
        if precision not in profile.tolerances:
            raise InputError(f"{path}: no [tolerances.{precision}] for the allowed precision {precision}")
    from .quantize import MODES, TOLERANCE_CLASS

    for mode in ex.quantization:
        if mode not in MODES[profile.backend]:
            raise InputError(f"{path}: quantization {mode!r} is not a {profile.backend} mode (those are: "
                             f"{', '.join(MODES[profile.backend])})")
        if TOLERANCE_CLASS[mode] not in profile.tolerances:
            raise InputError(f"{path}: no [tolerances.{TOLERANCE_CLASS[mode]}] for the quantization mode {mode}")
