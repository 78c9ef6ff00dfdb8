"""Reading the JSON documents that arrive from outside (bundles, result documents) strictly, and checking them
against their JSON Schemas (``shvit_edge/schemas``, the files the device apps are written against).

:func:`load_json` refuses what a schema cannot see: duplicate keys, NaN and infinities, nesting deeper than
:data:`~shvit_edge._strict.MAX_DEPTH`, lone surrogates, text that is not UTF-8. :func:`validate` names the first
violation by its place in the document. Every refusal is a one-line :class:`~shvit_edge.errors.InputError`.
"""

from __future__ import annotations

import functools
import json
import posixpath
from pathlib import Path

from .._strict import check_tree, key_name, quoted
from ..errors import InputError

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def load_json(data: bytes, where: str):
    """The JSON value in ``data`` (UTF-8), strictly; ``where`` names it in errors."""
    seen_dup = []

    def pairs_hook(pairs):
        obj = dict(pairs)
        if len(obj) != len(pairs) and not seen_dup:
            keys = set()
            seen_dup.append(next(k for k, _ in pairs if k in keys or keys.add(k)))
        return obj

    try:
        text = data.decode("utf-8")
        value = json.loads(text, object_pairs_hook=pairs_hook, parse_constant=_no_constant)
    except RecursionError:
        raise InputError(f"{where}: not valid JSON (nested too deeply)") from None
    except UnicodeDecodeError:
        raise InputError(f"{where}: not UTF-8 text") from None
    except ValueError as exc:
        raise InputError(f"{where}: not valid JSON ({' '.join(str(exc).split())[:200]})") from None
    if seen_dup:
        raise InputError(f"{where}: the key {key_name(seen_dup[0])} appears twice in one object")
    check_tree(value, where)
    return value


@functools.cache
def _registry():
    from referencing import Registry, Resource

    resources = []
    for path in sorted(SCHEMA_DIR.glob("*.schema.json")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        resources.append((schema["$id"], Resource.from_contents(schema)))
        resources.append((path.name, Resource.from_contents(schema)))
    return Registry().with_resources(resources)


@functools.cache
def schema(name: str) -> dict:
    """The schema ``shvit_edge/schemas/<name>.schema.json``."""
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))


@functools.cache
def _validator(name: str, definition: str | None):
    from jsonschema import Draft202012Validator

    if definition is None:
        return Draft202012Validator(schema(name), registry=_registry())
    return Draft202012Validator({"$ref": f"{name}.schema.json#/$defs/{definition}"}, registry=_registry())


def validate(document, name: str, where: str, definition: str | None = None) -> None:
    """Refuse ``document`` unless it is valid by the schema ``name`` (``bundle``, ``result``, ``bench``), or by
    its ``$defs`` entry ``definition`` (one branch of a ``oneOf``: its errors name the field, not the branch)."""
    from jsonschema.exceptions import best_match

    error = best_match(_validator(name, definition).iter_errors(document))
    if error is not None:
        place = "/".join(str(p) for p in error.absolute_path) or "the top level"
        raise InputError(f"{where}: not a valid {name} document: at {place}: {_short(error.message)}")


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:197] + "..."


def safe_relative(text, where: str) -> str:
    """``text`` as a path inside a folder: POSIX, relative, without ``..``, ``.``, empty parts, backslashes, NUL
    or control characters; the normalized path, or an :class:`InputError` naming ``where``."""
    problem = None
    if not isinstance(text, str) or not text:
        problem = "is not a non-empty string"
    elif text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        problem = "is absolute"
    elif "\\" in text or "\0" in text or any(ord(c) < 32 for c in text):
        problem = "holds a backslash, NUL or control character"
    elif any(part in ("", ".", "..") for part in text.split("/")):
        problem = "has an empty, '.' or '..' part"
    if problem is not None:
        raise InputError(f"{where}: the path {quoted(text)} {problem}: it must stay inside the bundle")
    return posixpath.normpath(text)


def inside(root: Path, relative: str, where: str) -> Path:
    """``root / relative`` (already :func:`safe_relative`), refused when any part of it is a symlink or the
    file is not a regular file: nothing outside ``root`` is ever read through a link."""
    import stat

    path = root
    for part in relative.split("/"):
        path = path / part
        try:
            mode = path.lstat().st_mode
        except OSError:
            raise InputError(f"{where}: {relative} is missing") from None
        if stat.S_ISLNK(mode):
            raise InputError(f"{where}: {relative} is (or passes through) a symlink; refused")
    if not stat.S_ISREG(mode):
        raise InputError(f"{where}: {relative} is not a regular file")
    return path
