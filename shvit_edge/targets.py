"""Deployment target profiles: device and OS facts, backend, precisions, harness settings and tolerances.

Profiles are data (``targets/*.toml``, shipped in the wheel as ``shvit_edge/_targets``); adding a phone needs
no Python change. A profile is read into frozen dataclasses and validated when read: a missing required key,
a value of the wrong type or an unknown key is an error that names the file and the key.

``--target`` takes a backend name (``coreml`` means ``iphone12-ios16``, ``executorch`` and ``tflite`` the
Android arm64 CPU profiles, ``onnx`` the host), a profile name, or a path to a user's own TOML file.

A profile's ``name`` becomes part of artifact file names, so it is a plain name (:func:`is_plain_name`). Numbers
are checked against their declared :mod:`~shvit_edge.bounds`. Reading is bounded: a file over
:data:`MAX_PROFILE_BYTES`, a FIFO or a device, a dotted key of more than :data:`MAX_KEY_PARTS` parts (tomllib
takes time quadratic in a key's parts: a minute or more for 50,000) or tables nested too deeply are refused
first.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ._strict import check_tree, decode_text, from_mapping, key_name, quoted, read_capped
from .bounds import COSINE, FRACTION, ITERATIONS, MAX_ABS, OPSET, SQNR_DB, THREADS, WARMUP
from .backends.registry import backends
from .errors import InputError, UsageError

PRECISIONS = ("fp32", "fp16", "int8")
#: a profile file larger than this is refused before it is read (the shipped ones are about 2 KB)
MAX_PROFILE_BYTES = 64 << 10  # the shipped profiles are 2-3 KB; tomllib is slow on big hostile files
#: a dotted key (``a.b.c = 1``, ``[a.b.c]``) of more parts than this is refused before the TOML is parsed
MAX_KEY_PARTS = 16
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def is_plain_name(text) -> bool:
    """A name that is safe as part of a file name: a letter or digit, then up to 63 letters, digits, ``.``,
    ``_`` or ``-``, and no ``..`` (so never a path, never ``.`` or ``..``)."""
    return isinstance(text, str) and _PLAIN_NAME.fullmatch(text) is not None and ".." not in text


def tolerance_classes() -> tuple[str, ...]:
    """The keys a ``tolerances`` table may have: the precisions and every backend's quantization classes."""
    return tuple(dict.fromkeys((*PRECISIONS, *(m.tolerance_class for b in backends().values()
                                               for m in b.quantization_modes))))


def default_profiles() -> dict[str, str]:
    """The profile each backend name stands for on the command line (the backend's ``default_profile``)."""
    return {name: backend.default_profile for name, backend in backends().items()}


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
    opset: int = field(default=18, metadata=OPSET.meta)


@dataclass(frozen=True)
class Harness:
    """How a device harness app runs a bundle of this profile's artifacts (``shvit-edge bundle``)."""

    warmup: int = field(default=10, metadata=WARMUP.meta)
    iterations: int = field(default=100, metadata=ITERATIONS.meta)
    threads: int = field(default=1, metadata=THREADS.meta)
    #: the delegates / compute units the app sweeps, one run each (none: the export's compute units, else its
    #: delegate, else the runtime's default)
    settings: tuple[str, ...] = ()

    def sweep(self, export: "ExportSettings") -> tuple[str, ...]:
        return self.settings or export.compute_units or ((export.delegate,) if export.delegate else ("default",))


@dataclass(frozen=True)
class Tolerance:
    """What ``verify`` accepts of an artifact against its PyTorch model: cosine similarity at least ``cosine``,
    largest absolute difference at most ``max_abs``, arg-max agreement at least ``top1_agreement``, and (when
    set) SQNR at least ``sqnr_db``."""

    cosine: float = field(metadata=COSINE.meta)
    max_abs: float = field(metadata=MAX_ABS.meta)
    top1_agreement: float = field(metadata=FRACTION.meta)
    sqnr_db: float | None = field(default=None, metadata=SQNR_DB.meta)

    @classmethod
    def from_record(cls, record: dict) -> Tolerance:
        """The tolerance of a bundle's ``tolerance`` record (which also carries ``class`` and ``source``)."""
        return cls(cosine=record["cosine"], max_abs=record["max_abs"], top1_agreement=record["top1_agreement"],
                   sqnr_db=record.get("sqnr_db"))


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
    defaults = default_profiles()
    if text in defaults:
        text = defaults[text]
    known = available_profiles()
    if text in known:
        return load_profile(known[text])
    path = Path(text).expanduser()
    if path.suffix == ".toml" or path.exists():
        if not path.exists():
            raise InputError(f"{path}: target profile file not found")
        return load_profile(path)  # a folder, a FIFO or a device: "not a regular file"
    raise UsageError(f"unknown target {spec!r}; choose a backend ({', '.join(defaults)}, or 'all'), "
                     f"a profile ({', '.join(known)}) or a path to a profile .toml")


def load_profile(path: Path) -> TargetProfile:
    path = Path(path)
    raw = read_capped(path, MAX_PROFILE_BYTES, "target profile")
    try:
        text = decode_text(raw)
        line = deep_dotted_key(text)
        if line is not None:
            raise InputError(f"{path}: a dotted key of more than {MAX_KEY_PARTS} parts (line {line}); "
                             "nest fewer tables")
        data = tomllib.loads(text)
    except RecursionError:
        raise InputError(f"{path}: not valid TOML (nested too deeply)") from None
    except (ValueError, UnicodeDecodeError) as exc:  # TOMLDecodeError, or an integer of over 4300 digits
        raise InputError(f"{path}: not valid TOML ({_one_line(exc)})") from None
    check_tree(data, path, text=False)  # tomllib refuses surrogate escapes itself
    profile = from_mapping(TargetProfile, data, path, exclude=("source",))
    classes = tolerance_classes()
    unknown = [p for p in profile.tolerances if p not in classes]
    if unknown:
        raise InputError(f"{path}: unknown tolerance class [tolerances.{key_name(unknown[0])}] (known: a "
                         f"precision or a quantization class: {', '.join(classes)})")
    profile = dataclasses.replace(profile, source=str(path))
    _check(profile, path)
    return profile


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


# Strings and comments, blanked before the dotted-key scan. An unterminated string runs to the end of its line
# (a one-line string) or of the text (a multi-line one): tomllib refuses it there, after what precedes it. No
# alternative can fail once its opening quote matched, so the scan never backtracks over a long string.
_TOML_STRINGS_AND_COMMENTS = re.compile(
    r"'''[\s\S]*?(?:'{3,5}|\Z)"  # multi-line literal string (one or two quotes may end its content)
    r'|"""(?:\\[\s\S]|[^\\])*?(?:"{3,5}|\\?\Z)'  # multi-line basic string
    r'|"(?:\\.|[^"\\\n])*(?:"|\\?$)'  # basic string
    r"|'[^'\n]*(?:'|$)"  # literal string
    r"|#[^\n]*",  # comment
    re.MULTILINE)
# MAX_KEY_PARTS + 1 bare parts (a string is a bare "Q" by then, and a run of blanks one space) joined by dots.
# A match starts only where a chain of parts starts (not after a part character, a dot or a dot and a space),
# so an attempt that fails has scanned a chain of fewer parts, which no later attempt enters: linear time.
_BLANKS = re.compile(r"[ \t]+")
_DEEP_DOTTED = re.compile(r"(?<![A-Za-z0-9_.-])(?<!\. )[A-Za-z0-9_-]+(?: ?\. ?[A-Za-z0-9_-]+){%d}" % MAX_KEY_PARTS)


def deep_dotted_key(text: str) -> int | None:
    """The line of the first dotted key (``a.b.c = 1``, or a table header ``[a.b.c]``) of more than
    :data:`MAX_KEY_PARTS` parts in TOML ``text``, or None. Linear time: it runs before tomllib, whose time is
    quadratic in a key's parts (it builds the key a part at a time, and then its tables), whether or not an
    ``=`` follows. Strings and comments are blanked first, so dotted text in them does not count; outside them
    a valid document has dots only in keys and in numbers (``1.5``: two parts)."""
    blank = _BLANKS.sub(" ", _TOML_STRINGS_AND_COMMENTS.sub(
        lambda m: "" if m.group().startswith("#") else "Q" + "\n" * m.group().count("\n"), text))
    match = _DEEP_DOTTED.search(blank)
    return None if match is None else blank.count("\n", 0, match.start()) + 1


def _check(profile: TargetProfile, path: Path) -> None:
    if not is_plain_name(profile.name):
        raise InputError(f"{path}: name {quoted(profile.name)} is not a plain name (it becomes part of file "
                         "names: a letter or digit, then up to 63 letters, digits, '.', '_' or '-', no '..')")
    known = backends()
    if profile.backend not in known:
        raise InputError(f"{path}: backend {quoted(profile.backend)} is not one of {', '.join(known)}")
    ex = profile.export
    for p in (ex.precision, *ex.precisions):
        if p not in PRECISIONS:
            raise InputError(f"{path}: precision {quoted(p)} is not one of {', '.join(PRECISIONS)}")
    if ex.precision not in ex.precisions:
        raise InputError(f"{path}: export.precision {quoted(ex.precision)} is not in export.precisions")
    for precision in ex.precisions:
        if precision not in profile.tolerances:
            raise InputError(f"{path}: no [tolerances.{precision}] for the allowed precision {precision}")
    backend = known[profile.backend]
    for mode in ex.quantization:
        found = backend.mode(mode)
        if found is None:
            raise InputError(f"{path}: quantization {quoted(mode)} is not a {profile.backend} mode (those are: "
                             f"{', '.join(m.name for m in backend.quantization_modes)})")
        if found.tolerance_class not in profile.tolerances:
            raise InputError(f"{path}: no [tolerances.{found.tolerance_class}] for the quantization mode {mode}")
