"""Registered code that another process must find: a backend or model family defined outside the package (a
plug-in's module, a script, a test file) is registered in the process that defined it, and a worker process
(export's, verify's, bench's) imports the module that defines it before looking it up."""

from __future__ import annotations

import importlib
import importlib.util
import sys


def where_defined(obj) -> dict:
    """The module that defines ``obj``'s class, by name and file (JSON-friendly)."""
    module = type(obj).__module__
    return {"module": module, "file": getattr(sys.modules.get(module), "__file__", None)}


def import_defining_module(where: dict):
    """The module :func:`where_defined` names: already imported, importable by name, or else loaded from its file
    (a script or a test file, which is not on the worker's path)."""
    module = sys.modules.get(where["module"])
    if module is not None:
        return module
    try:
        return importlib.import_module(where["module"])
    except ImportError:
        if not where.get("file"):
            raise
    spec = importlib.util.spec_from_file_location(where["module"], where["file"])
    module = importlib.util.module_from_spec(spec)
    sys.modules[where["module"]] = module
    spec.loader.exec_module(module)
    return module
