"""Strict construction of frozen dataclasses from parsed TOML/JSON: unknown keys, missing keys and wrong types
are errors naming the file and the key. Shared by target profiles and manifests."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

from .errors import InputError


def from_mapping(cls, data, path: Path, where: str = "", exclude: tuple[str, ...] = ()):
    """``cls(**data)``, recursively, after checking every key and value against ``cls``'s type hints.

    ``exclude``: fields that are never read from the mapping (the caller fills them in).
    """
    label = f"[{where}]" if where else "the top level"
    if not isinstance(data, dict):
        raise InputError(f"{path}: {label} must be a table/object")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in exclude}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise InputError(f"{path}: unknown key {unknown[0]!r} in {label} (allowed: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _value(hints[name], data[name], path, f"{where}.{name}" if where else name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise InputError(f"{path}: missing key {name!r} in {label}")
    return cls(**kwargs)


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
        if args and dataclasses.is_dataclass(args[1]):
            return {k: from_mapping(args[1], v, path, f"{key}.{k}") for k, v in value.items()}
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint in (int, float) and isinstance(value, bool)):
        raise InputError(f"{path}: {key} must be {hint.__name__}, not {type(value).__name__}")
    return value
