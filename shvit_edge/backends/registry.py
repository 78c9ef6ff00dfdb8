"""The backend registry: every backend is a :class:`~shvit_edge.backends.base.Backend` subclass registered by name.

The core (export, verify, bench, quantize, targets, the CLI and the report) only iterates this registry; it
never names a backend. Backends are found three ways, in this order:

- the modules of the ``shvit_edge.backends`` package (a module whose name does not start with ``_``; each
  registers its class with :func:`register` when imported), so a new built-in backend is one new module;
- the ``shvit_edge.backends`` entry-point group of installed distributions (a plugin names its module);
- :func:`register` called by the user's own code (a test registers a fake backend this way).

This module imports nothing of the project but its errors, so any module may ask it what backends exist; the
backend modules themselves are imported on the first question (they import their libraries lazily, so this
is cheap).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import pkgutil
import re
import threading
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..plugins import import_defining_module, where_defined

if TYPE_CHECKING:  # pragma: no cover
    from .base import Backend  # noqa: F401 - annotations only

#: entry-point group a third-party distribution registers its backend modules under
ENTRY_POINT_GROUP = "shvit_edge.backends"
#: modules of this package that hold no backend
_NOT_BACKENDS = {"base", "registry"}
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")

_registry: dict[str, Backend] = {}
_lock = threading.RLock()
_discovered = False


class MissingExtraError(UsageError):
    """The backend's optional dependencies are not installed (exit 2)."""


def option(default, *, flag: str, help: str, choices: tuple | None = None, metavar: str | None = None):
    """A field of a backend's ``Options`` dataclass that is also a CLI option of ``export``: ``flag`` (e.g.
    ``--layout``), its help, and for a string option its ``choices``. A bool option is a flag."""
    return dataclasses.field(default=default, metadata={"cli": {"flag": flag, "help": help, "choices": choices,
                                                                "metavar": metavar}})


def option_fields(options_cls) -> list:
    """The fields of an ``Options`` dataclass, each with its CLI facts (``field.metadata["cli"]``)."""
    return [f for f in dataclasses.fields(options_cls) if "cli" in f.metadata]


_REQUIRED = ("name", "title", "suffix", "extra", "libraries", "default_profile", "Options", "quantization_modes",
             "export", "load", "is_available", "check", "cannot_run_here", "runtime_settings")


def register(cls):
    """Class decorator: register one instance of the backend class ``cls`` (a subclass of
    :class:`shvit_edge.backends.base.Backend`) under ``cls.name``.

    Checked here, so a mistake shows at import, not halfway through an export: a plain lower-case name not yet
    taken, a suffix, a frozen ``Options`` dataclass with a default for each field, whose field names and CLI
    flags no other backend uses (they become options of ``export``), and distinct quantization modes."""
    missing = [a for a in _REQUIRED if not hasattr(cls, a)]
    if not isinstance(cls, type) or missing:
        raise TypeError(f"{cls!r} is not a Backend subclass (missing: {', '.join(missing)})")
    name = cls.name
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise TypeError(f"{cls.__qualname__}.name must be a lower-case identifier, got {name!r}")
    if not isinstance(cls.suffix, str) or not cls.suffix.startswith("."):
        raise TypeError(f"{cls.__qualname__}.suffix must be a file suffix such as '.onnx', got {cls.suffix!r}")
    options = cls.Options
    if not dataclasses.is_dataclass(options) or not options.__dataclass_params__.frozen:
        raise TypeError(f"{cls.__qualname__}.Options must be a frozen dataclass")
    options()  # every option has a default
    modes = [m.name for m in cls.quantization_modes]
    if len(set(modes)) != len(modes):
        raise TypeError(f"{cls.__qualname__}: a quantization mode is declared twice ({modes})")
    with _lock:
        if name in _registry and type(_registry[name]).__qualname__ != cls.__qualname__:
            raise TypeError(f"backend {name!r} is already registered by {type(_registry[name]).__qualname__}")
        others = [b for b in _registry.values() if b.name != name]
        names = {f.name: b.name for b in others for f in dataclasses.fields(b.Options)}
        flags = {f.metadata["cli"]["flag"]: b.name for b in others for f in option_fields(b.Options)}
        for field in dataclasses.fields(options):
            if field.name in names:
                raise TypeError(f"{cls.__qualname__}.Options.{field.name}: the {names[field.name]} backend has "
                                "an option of that name")
        for field in option_fields(options):
            if field.metadata["cli"]["flag"] in flags:
                raise TypeError(f"{cls.__qualname__}: option {field.metadata['cli']['flag']} is the "
                                f"{flags[field.metadata['cli']['flag']]} backend's")
        _registry[name] = cls()
    return cls


def unregister(name: str) -> None:
    """Remove a backend registered by :func:`register` (a test's fake backend, when the test ends)."""
    with _lock:
        _registry.pop(name, None)


def _discover() -> None:
    global _discovered
    with _lock:
        if _discovered:
            return
        _discovered = True
        package = importlib.import_module(__package__)
        for module in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            if not module.name.startswith("_") and module.name not in _NOT_BACKENDS:
                importlib.import_module(f"{__package__}.{module.name}")
        for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            importlib.import_module(entry.value.split(":", 1)[0])


def backends() -> dict[str, Backend]:
    """Every registered backend by name, ordered by each one's ``rank`` (the order of ``--target all``, of the
    CLI's options and of reports), then by name."""
    _discover()
    with _lock:
        ordered = sorted(_registry, key=lambda n: (getattr(_registry[n], "rank", 100), n))
        return {n: _registry[n] for n in ordered}


def backend_names() -> tuple[str, ...]:
    return tuple(backends())


def get_backend(name: str) -> Backend:
    """The backend registered under ``name`` (its library is not imported yet)."""
    known = backends()
    if name not in known:
        raise UsageError(f"unknown backend {name!r}; known: {', '.join(known)}")
    return known[name]


def require(name: str) -> Backend:
    """The backend, or one line telling how to install its extra."""
    backend = get_backend(name)
    if not backend.is_available():
        raise MissingExtraError(f"the {name} backend needs its extra: pip install 'shvit-edge[{backend.extra}]'")
    return backend


def origin(name: str) -> dict:
    """Where the backend ``name`` is defined, so a worker process can register it too: its class's module, the
    module's file and the class's name."""
    backend = get_backend(name)
    return {"name": name, **where_defined(backend), "qualname": type(backend).__qualname__}


def ensure_registered(where: dict | None) -> None:
    """In a worker process: register the backend ``where`` describes (see :func:`origin`) unless it is: import
    its module (by name, or from its file: a backend defined in a script or a test) and register its class if
    importing did not."""
    if not where or where["name"] in backends():
        return
    cls = import_defining_module(where)
    if where["name"] not in backends():
        for part in where["qualname"].split("."):
            cls = getattr(cls, part)
        register(cls)
