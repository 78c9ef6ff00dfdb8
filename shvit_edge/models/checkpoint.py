"""Loading the checkpoints people actually have, safely, with one clear message for every failure.

Accepted containers: training checkpoints (``model``, ``model_ema``, ``optimizer``, ``epoch``, ``args``), a
bare state dict, safetensors, fp16/bf16 weights (upcast to fp32), ``module.`` / ``_orig_mod.`` prefixes, and
1x1-conv weights saved 2-D. Which model family a state dict belongs to, and in which of its key layouts, the
registered families say (:meth:`~shvit_edge.models.family.ModelFamily.detect_layout`); SHViT's are the
authors' (``blocks1..3``) and timm's (``stages.N.downsample`` / ``stages.N.blocks``).

The variant, class count and distillation head are detected from tensor shapes: the state dict is compared,
key by key and shape by shape, with the state dict each variant of the family would have. Exactly one variant
matches a valid checkpoint; when none does, the differences against the closest variant are reported.

Pickles are read with ``torch.load(weights_only=True)`` and an allow-list of one extra type
(``argparse.Namespace``, which the authors' ``args`` entry holds). Anything else is refused, naming the type,
unless the caller opts in with ``trust_checkpoint=True`` (CLI: ``--trust-checkpoint``).
"""

from __future__ import annotations

import argparse
import functools
import pickle
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from ..atomic import sha256_of
from ..errors import CheckpointError, UnsafeCheckpointError
from .family import ModelFamily
from .registry import families, resolve_variant

#: Types a checkpoint may hold besides tensors and plain containers.
SAFE_GLOBALS = (argparse.Namespace,)

_TRAINING_KEYS = ("model", "state_dict", "model_state_dict", "net")
_EMA_KEYS = ("model_ema", "state_dict_ema", "ema")
_PREFIXES = ("module.", "_orig_mod.")
_BUFFER_SUFFIX = ".num_batches_tracked"
_MAX_LISTED = 5


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint loaded into an eval-mode model, with what was learned about the file."""

    model: nn.Module
    variant: str
    num_classes: int
    distillation: bool
    #: as the family names it (:meth:`~shvit_edge.models.family.ModelFamily.layout_name`). SHViT's:
    #: ``"official"``: the authors' training checkpoint (``model``/``model_ema``/... with ``blocks1..3`` keys);
    #: ``"timm"``: timm's key layout (``stages.N.*``), bare or wrapped; ``"plain"``: a bare state dict in the
    #: authors' key layout (no training-checkpoint wrapper).
    layout: str
    path: Path
    has_ema: bool
    used_ema: bool
    #: The floating-point dtype the weights were stored in (they are always loaded as float32).
    dtype: str
    #: ``"training-checkpoint"``, ``"state-dict"``, ``"safetensors"`` or ``"module"`` (a pickled nn.Module).
    container: str
    sha256: str
    extra: dict = field(default_factory=dict)
    #: the registered model family's name
    family: str = "shvit"

    def describe(self) -> dict:
        """The JSON-friendly facts ``shvit-edge inspect`` prints."""
        return {
            "path": str(self.path), "family": self.family, "layout": self.layout, "variant": self.variant,
            "num_classes": self.num_classes, "distillation": self.distillation, "has_ema": self.has_ema,
            "used_ema": self.used_ema, "dtype": self.dtype, "container": self.container, "sha256": self.sha256,
            **self.extra,
        }


def load_checkpoint(path, variant: str | None = None, use_ema: bool = False,
                    trust_checkpoint: bool = False) -> LoadedCheckpoint:
    """Load a checkpoint of any registered model family into a model of the variant its shapes describe (eval
    mode, float32).

    ``variant``: the variant you expect; a checkpoint of another variant is an error.
    ``use_ema``: take the EMA weights (``model_ema``) of a training checkpoint; an error if there are none.
    ``trust_checkpoint``: allow arbitrary pickled objects (runs code from the file: only for files you trust).

    Every failure is a :class:`~shvit_edge.errors.CheckpointError` naming the file.
    """
    path = Path(path)
    expected = resolve_variant(variant) if variant is not None else None
    obj, container = _read(path, trust_checkpoint)
    state, container, has_ema, extra = _select_state_dict(path, obj, container, use_ema)
    state = _strip_prefixes(state)
    family, key_layout = _detect_family(path, state, expected[0] if expected is not None else None)
    namer = family.key_namer(key_layout)
    state = family.to_model_keys(state, key_layout)
    _require_float_weights(path, state, namer=namer)
    dtype = _stored_dtype(state)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    num_classes, distillation = family.head_facts(state)
    name = _match_variant(path, family, state, expected[1] if expected is not None else None, num_classes,
                          distillation, namer)
    model = family.create(name, num_classes=num_classes, distillation=distillation)
    _load_into(path, model, state)
    return LoadedCheckpoint(
        model=model.eval(), variant=name, num_classes=num_classes, distillation=distillation,
        layout=family.layout_name(key_layout, container), path=path, has_ema=has_ema, used_ema=use_ema,
        dtype=dtype, container=container, sha256=sha256_of(path), extra={"key_layout": key_layout, **extra},
        family=family.name,
    )


def _detect_family(path: Path, state: dict, expected: ModelFamily | None) -> tuple[ModelFamily, str]:
    """(family, key layout) of ``state``: the first registered family (or the expected one) that recognises
    its keys."""
    candidates = (expected,) if expected is not None else families()
    for family in candidates:
        layout = family.detect_layout(state)
        if layout is not None:
            return family, layout
    sample = ", ".join(list(state)[:_MAX_LISTED])
    if len(candidates) == 1:
        family = candidates[0]
        raise CheckpointError(f"{path}: not an {family.title or family.name} state dict: no {family.layout_hint} "
                              f"keys (first keys: {sample})")
    hints = "; ".join(f"{f.title or f.name}: {f.layout_hint}" for f in candidates)
    raise CheckpointError(f"{path}: not a state dict of any known model family: none of their keys ({hints}) "
                          f"(first keys: {sample})")


# --------------------------------------------------------------------------------------------- reading


def _read(path: Path, trust: bool):
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if not path.is_file():  # a FIFO would block the read, a device never end it
        raise CheckpointError(f"{path}: not a regular file (a device, FIFO or socket is no checkpoint)")
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
        size = path.stat().st_size
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if size == 0:
        raise CheckpointError(f"{path}: empty file, not a checkpoint")
    if _looks_like_safetensors(head):
        return _read_safetensors(path), "safetensors"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return _read_torch(path, trust), "pickle"
    raise CheckpointError(f"{path}: not a checkpoint (neither a PyTorch file nor safetensors)")


def _looks_like_safetensors(head: bytes) -> bool:
    if len(head) < 9:
        return False
    header_len = int.from_bytes(head[:8], "little")  # safetensors: u64 header length, then a JSON object
    return 0 < header_len < (1 << 27) and head[8:9] == b"{"


def _read_safetensors(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: cannot read as safetensors ({_first_line(exc)}); "
                              "the file may be truncated or corrupt") from None


def _read_torch(path: Path, trust: bool):
    if trust:
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any failure of an opted-in full unpickle is a bad file
            raise CheckpointError(f"{path}: cannot read as a PyTorch checkpoint ({_first_line(exc)})") from None
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - zip/EOF/unpickling errors all end in one message
        refused = isinstance(exc, pickle.UnpicklingError)
        types = _unsafe_types(path, exc) if refused else []
        if types:
            raise UnsafeCheckpointError(
                f"{path}: refused to unpickle {', '.join(types)}: the checkpoint stores objects of "
                f"type(s) outside the allow-list (tensors, plain containers, argparse.Namespace), and "
                "loading them would run code from the file. If you trust where it came from, pass "
                "--trust-checkpoint (API: trust_checkpoint=True).", types) from None
        if refused:
            raise CheckpointError(f"{path}: cannot be read safely: its pickle uses instructions the "
                                  "weights-only loader does not accept (it was not written by torch.save?); "
                                  "if you trust where it came from, pass --trust-checkpoint") from None
        raise CheckpointError(f"{path}: cannot read as a PyTorch checkpoint ({_first_line(exc)}); "
                              "the file may be truncated or corrupt") from None


_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")
_ALLOWED_NAMES = {f"{t.__module__}.{t.__qualname__}" for t in SAFE_GLOBALS}


def _unsafe_types(path: Path, exc: Exception) -> list[str]:
    """The fully qualified names of the globals that stopped ``weights_only`` loading, found without running
    anything: torch's own opcode scan for zip checkpoints, ``pickletools`` for other pickles."""
    names = [n for n in _GLOBAL_RE.findall(str(exc))]
    try:
        names += torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - not a zip checkpoint: scan the raw pickle stream instead
        names += [n for n in _pickle_globals(path) if n not in _torch_allowed_globals()]
    return [n for n in dict.fromkeys(names) if n not in _ALLOWED_NAMES]


def _torch_allowed_globals() -> set[str]:
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        return set(_get_allowed_globals())
    except Exception:  # noqa: BLE001 - a private helper; without it, name every global
        return set()


def _pickle_globals(path: Path, max_pickles: int = 8) -> list[str]:
    """Every global a (possibly multi-part, as legacy torch files are) pickle stream names, by reading its
    opcodes with :mod:`pickletools`; nothing is executed."""
    import pickletools

    found: list[str] = []
    with open(path, "rb") as fh:
        for _ in range(max_pickles):
            strings: list[str] = []
            memo: dict[int, object] = {}
            try:
                for op, arg, _pos in pickletools.genops(fh):
                    if op.name == "GLOBAL":
                        found.append(str(arg).replace(" ", "."))
                    elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                        found.append(f"{strings[-2]}.{strings[-1]}")
                    elif isinstance(arg, str) and "UNICODE" in op.name:
                        strings.append(arg)
                    elif op.name == "MEMOIZE":
                        memo[len(memo)] = strings[-1] if strings else None
                    elif op.name in ("BINPUT", "LONG_BINPUT", "PUT"):
                        memo[int(arg)] = strings[-1] if strings else None
                    elif op.name in ("BINGET", "LONG_BINGET", "GET") and isinstance(memo.get(int(arg)), str):
                        strings.append(memo[int(arg)])
            except Exception:  # noqa: BLE001 - the end of the pickle data (tensor bytes follow)
                break
    return list(dict.fromkeys(found))


def _first_line(exc: BaseException) -> str:
    """The first sentence of an exception's message, for a one-line error."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line.split(". ")[0].rstrip(".")[:200]


# -------------------------------------------------------------------------------------- state dict


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _as_state_dict(obj):
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    return obj


def _select_state_dict(path: Path, obj, container: str, use_ema: bool):
    """(state dict, container, has_ema, extra facts) from whatever the file held."""
    if isinstance(obj, nn.Module):
        obj, container = obj.state_dict(), "module"
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict or training checkpoint")
    extra: dict = {}
    wrapped = {k: _as_state_dict(obj[k]) for k in _TRAINING_KEYS + _EMA_KEYS if k in obj}
    ema_key = next((k for k in _EMA_KEYS if _is_state_dict(wrapped.get(k))), None)
    main_key = next((k for k in _TRAINING_KEYS if _is_state_dict(wrapped.get(k))), None)
    has_ema = ema_key is not None
    if main_key is None and ema_key is None:
        if _is_state_dict(obj):
            if use_ema:
                raise CheckpointError(f"{path}: --ema asked for EMA weights, but the file is a bare state dict "
                                      "with no model_ema entry")
            return obj, ("safetensors" if container == "safetensors" else
                         "module" if container == "module" else "state-dict"), False, extra
        keys = ", ".join(repr(k) for k in list(obj)[:_MAX_LISTED])
        raise CheckpointError(f"{path}: not a model checkpoint: no state dict found "
                              f"(top-level keys: {keys or 'none'})")
    if "epoch" in obj and isinstance(obj["epoch"], int):
        extra["epoch"] = obj["epoch"]
    if use_ema:
        if ema_key is None:
            raise CheckpointError(f"{path}: --ema asked for EMA weights, but the checkpoint has no "
                                  f"{' / '.join(_EMA_KEYS)} entry (it has: {', '.join(map(str, obj))})")
        return wrapped[ema_key], "training-checkpoint", True, extra
    if main_key is None:
        raise CheckpointError(f"{path}: the checkpoint holds only EMA weights ({ema_key}); pass --ema to use them")
    return wrapped[main_key], "training-checkpoint", has_ema, extra


def _strip_prefixes(state: dict) -> dict:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def _require_float_weights(path: Path, state: dict, namer=None) -> None:
    """Weights must be floating point: an int64, bool or complex tensor cast to float32 becomes an almost
    all-zero model that exports and then "verifies" against an equally zero reference. Only BatchNorm's
    ``num_batches_tracked`` counters are integers."""
    wrong = [(k, v.dtype) for k, v in state.items()
             if isinstance(v, torch.Tensor) and not v.is_floating_point() and not k.endswith(_BUFFER_SUFFIX)]
    if wrong:
        key, dtype = wrong[0]
        name = namer(key) if namer else key
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        raise CheckpointError(f"{path}: {name} is {str(dtype).replace('torch.', '')}, not floating point{more}: "
                              "weights must be float16, bfloat16, float32 or float64")


def _stored_dtype(state: dict) -> str:
    counts = Counter(str(v.dtype).replace("torch.", "") for v in state.values() if v.is_floating_point())
    return counts.most_common(1)[0][0] if counts else "none"


@functools.lru_cache(maxsize=64)
def _expected_shapes(family: ModelFamily, name: str, num_classes: int,
                     distillation: bool) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = family.create(name, num_classes=num_classes, distillation=distillation)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@dataclass
class _Diff:
    missing: list[str]
    unexpected: list[str]
    mismatched: list[tuple[str, tuple, tuple]]

    @property
    def count(self) -> int:
        return len(self.missing) + len(self.unexpected) + len(self.mismatched)

    def describe(self, namer) -> str:
        """The differences, keys named by ``namer`` (the file's own key layout)."""
        parts = []
        if self.missing:
            parts.append(f"missing keys ({len(self.missing)}): {_listed([namer(k) for k in self.missing])}")
        if self.unexpected:
            parts.append(f"unexpected keys ({len(self.unexpected)}): "
                         f"{_listed([namer(k) for k in self.unexpected])}")
        if self.mismatched:
            shown = "; ".join(f"{namer(k)} is {list(got)} in the checkpoint, {list(want)} in the model"
                              for k, got, want in self.mismatched[:_MAX_LISTED])
            more = f" (+{len(self.mismatched) - _MAX_LISTED} more)" if len(self.mismatched) > _MAX_LISTED else ""
            parts.append(f"shape mismatches ({len(self.mismatched)}): {shown}{more}")
        return "; ".join(parts)


def _listed(keys: list[str]) -> str:
    more = f" (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return ", ".join(keys[:_MAX_LISTED]) + more


def _fits(got: tuple, want: tuple) -> bool:
    """Equal shapes, or a 1x1 conv weight saved 2-D (the authors' loader reshapes those)."""
    return got == want or (len(got) == 2 and len(want) == 4 and want[2:] == (1, 1) and got == want[:2])


def _diff(state: dict, expected: dict[str, tuple]) -> _Diff:
    missing = [k for k in expected if k not in state and not k.endswith(_BUFFER_SUFFIX)]
    unexpected = [k for k in state if k not in expected]
    mismatched = [(k, tuple(state[k].shape), expected[k]) for k in expected
                  if k in state and not _fits(tuple(state[k].shape), expected[k])]
    return _Diff(missing, unexpected, mismatched)


def _match_variant(path: Path, family: ModelFamily, state: dict, expected: str | None, num_classes: int,
                   distillation: bool, namer) -> str:
    names = list(family.variants())
    diffs = {name: _diff(state, _expected_shapes(family, name, num_classes, distillation)) for name in names}
    exact = [name for name, d in diffs.items() if d.count == 0]
    if expected is not None:
        if expected in exact:
            return expected
        if exact:
            raise CheckpointError(f"{path}: the checkpoint is {exact[0]}, not {expected} as asked "
                                  "(detected from its tensor shapes); drop --variant or pass the right one")
        raise CheckpointError(f"{path}: does not match {expected}: {diffs[expected].describe(namer)}")
    if exact:
        return exact[0]
    closest = min(diffs, key=lambda name: diffs[name].count)
    raise CheckpointError(f"{path}: does not match any {family.title or family.name} variant ({', '.join(names)}); "
                          f"against the closest, {closest}: {diffs[closest].describe(namer)}")


def _load_into(path: Path, model: nn.Module, state: dict) -> None:
    own = model.state_dict()
    fixed = {}
    for key, want in own.items():
        if key not in state:  # only num_batches_tracked can be absent here (_diff allows that)
            fixed[key] = want
            continue
        value = state[key]
        fixed[key] = value.reshape(want.shape) if value.shape != want.shape else value
    try:
        model.load_state_dict(fixed, strict=True)
    except RuntimeError as exc:  # _match_variant compared keys and shapes already; this is a last resort
        raise CheckpointError(f"{path}: cannot load into {model.variant}: {_first_line(exc)}") from None
