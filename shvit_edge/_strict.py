"""Strict reading of TOML/JSON inputs into frozen dataclasses, shared by target profiles and manifests.

* :func:`read_capped`: a file's bytes, refused (a one-line :class:`InputError`) when it is not a regular file (a
  FIFO, ``/dev/zero`` or a folder is never read, so never hangs) or is larger than a cap.
* :func:`check_tree`: parsed data nested deeper than a limit, or holding a non-finite float anywhere (TOML's
  ``nan``/``inf``, JSON's ``NaN``/``Infinity`` or an overflowing ``1e400``), is refused, naming the key.
* :func:`from_mapping`: ``cls(**data)``, recursively; unknown keys, missing keys, wrong types and values outside
  a field's declared :class:`~shvit_edge.bounds.Bounds` (``field(metadata=BOUNDS.meta)``) are errors naming the
  file and the key.

Every message is one line: keys and values a file supplies are quoted with :func:`repr` when they are not plain.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import stat
import types
import typing
from pathlib import Path

from .errors import InputError

#: how deep parsed data may nest (tables/objects and lists); profiles need 3 levels, manifests about 6
MAX_DEPTH = 64
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


def read_capped(path: Path, limit: int, what: str) -> bytes:
    """The bytes of the regular file at ``path``, at most ``limit`` of them; ``what`` names it in errors.

    Checked with :func:`os.stat` before the file is opened (a FIFO or a device is never opened), and again on
    the open descriptor (opened non-blocking, so a file swapped for a FIFO in between does not hang either).
    """
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{path}: {what} is not a regular file")
        if info.st_size > limit:
            raise InputError(f"{path}: {what} is {info.st_size} bytes, more than the {limit} allowed")
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
        fd = os.open(path, flags)
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise InputError(f"{path}: {what} is not a regular file")
            data = file.read(limit + 1)
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise InputError(f"{path}: {what} is more than the {limit} bytes allowed")
    return data


def decode_text(data: bytes) -> str:
    """UTF-8 ``data`` with universal newlines, as :meth:`Path.read_text` reads it (UnicodeDecodeError if not)."""
    return data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")


def key_name(key) -> str:
    """A key a file supplies, fit for a one-line message: as is when plain, else quoted (and shortened)."""
    if isinstance(key, str) and _PLAIN_KEY.fullmatch(key):
        return key
    return quoted(key)


def quoted(value) -> str:
    """``repr(value)`` (one line whatever ``value`` holds), shortened to 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _join(where: str, key) -> str:
    return f"{where}.{key_name(key)}" if where else key_name(key)


def check_tree(data, path: Path, max_depth: int = MAX_DEPTH, text: bool = True) -> None:
    """Refuse ``data`` (parsed TOML/JSON) holding tables/lists more than ``max_depth`` levels deep, a NaN or an
    infinity, or (``text``) a string or key with a lone surrogate (JSON's ``"\\ud800"``), anywhere, naming the
    key. Depth-first without recursion: linear time, memory proportional to the depth."""
    isfinite = math.isfinite

    def where(trail) -> str:  # a trail is (parent's trail, key or index), None at the top
        parts = []
        while trail is not None:
            trail, key = trail
            parts.append(f"[{key}]" if isinstance(key, int) else "." + key_name(key))
        return "".join(reversed(parts)).lstrip(".") or "the top level"

    def entries(container, trail):
        if type(container) is not dict:
            return enumerate(container)
        if text:
            for k in container:
                if type(k) is str and not _is_unicode(k):
                    raise InputError(f"{path}: a key in {where(trail)} is not valid Unicode text (a lone surrogate)")
        return iter(container.items())

    if type(data) is not dict and type(data) is not list:
        return  # a lone scalar: from_mapping refuses it
    stack = [(entries(data, None), None)]
    while stack:
        items, trail = stack[-1]
        for k, v in items:
            kind = type(v)
            if kind is dict or kind is list:
                if len(stack) >= max_depth:
                    raise InputError(f"{path}: {where((trail, k))} is nested more than {max_depth} levels deep")
                if v:
                    stack.append((entries(v, (trail, k)), (trail, k)))
                    break
            elif kind is float:
                if not isfinite(v):
                    raise InputError(f"{path}: {where((trail, k))} must be a finite number, not {v}")
            elif kind is str and text and not _is_unicode(v):
                raise InputError(f"{path}: {where((trail, k))} is not valid Unicode text (a lone surrogate)")
        else:
            stack.pop()


def _is_unicode(text: str) -> bool:
    """No lone surrogates (JSON's ``"\\ud800"``): the text can be encoded, printed and used in a path."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def from_mapping(cls, data, path: Path, where: str = "", exclude: tuple[str, ...] = ()):
    """``cls(**data)``, recursively, after checking every key and value against ``cls``'s type hints and every
    field's declared bounds (``field(metadata=BOUNDS.meta)``). A float field refuses NaN and infinities.

    Bounds apply to the field's value, or to each item of a tuple field (e.g. each dimension of a shape); an
    optional field's None is not checked. ``exclude``: fields never read from the mapping (the caller fills
    them in).
    """
    label = f"[{where}]" if where else "the top level"
    if not isinstance(data, dict):
        raise InputError(f"{path}: {label} must be a table/object")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in exclude}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise InputError(f"{path}: unknown key {quoted(unknown[0])} in {label} (allowed: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            key = f"{where}.{name}" if where else name
            value = _value(hints[name], data[name], path, key)
            bounds = f.metadata.get("bounds")
            if bounds is not None and value is not None:
                _check_bounds(bounds, value, path, key)
            kwargs[name] = value
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise InputError(f"{path}: missing key {name!r} in {label}")
    return cls(**kwargs)


def _check_bounds(bounds, value, path: Path, key: str) -> None:
    items = enumerate(value) if isinstance(value, tuple) else ((None, value),)
    for i, item in items:
        problem = bounds.problem(item)
        if problem is not None:
            if len(problem) > 200:  # "got" an integer of thousands of digits
                problem = problem[:197] + "..."
            raise InputError(f"{path}: {key if i is None else f'{key}[{i}]'} {problem}")


def _value(hint, value, path: Path, key: str):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _value(inner, value, path, key)
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value, path, key)
    if origin is tuple:
        if not isinstance(value, list):
            raise InputError(f"{path}: {key} must be a list")
        items = [a for a in args if a is not Ellipsis]
        if Ellipsis in args:
            return tuple(_value(items[0], v, path, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(items):
            raise InputError(f"{path}: {key} must have {len(items)} entries")
        return tuple(_value(t, v, path, f"{key}[{i}]") for i, (t, v) in enumerate(zip(items, value, strict=True)))
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise InputError(f"{path}: {key} must be a table/object")
        if not args:
            return value
        key_type, value_type = args
        for k in value:
            if not isinstance(k, key_type):
                raise InputError(f"{path}: {_join(key, k)}: keys must be {key_type.__name__}")
        return {k: _value(value_type, v, path, _join(key, k)) for k, v in value.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise InputError(f"{path}: {key} must be a finite number, got an integer of {value.bit_length()} "
                             "bits") from None
    if not isinstance(value, hint) or (hint in (int, float) and isinstance(value, bool)):
        raise InputError(f"{path}: {key} must be {hint.__name__}, not {type(value).__name__}")
    if hint is float and not math.isfinite(value):
        raise InputError(f"{path}: {key} must be a finite number, not {value}")
    return value
