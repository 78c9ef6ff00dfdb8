"""What every backend provides, and the registry that finds one by name.

One backend, one module, one surface: ``is_available()``, ``export(job, out) -> BackendResult`` and
``load(path, manifest, threads) -> Runner`` (a callable from numpy arrays to numpy arrays that also reports the
input the runtime itself expects). The backend's library is imported inside those functions, so a missing
extra costs nothing until it is used.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from ..errors import UsageError
from ..manifest import Quantization, TensorSpec

#: backend name -> (module, pip extra, the distributions whose versions go into the manifest)
REGISTRY: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "coreml": ("shvit_edge.backends.coreml", "coreml", ("coremltools",)),
    "executorch": ("shvit_edge.backends.executorch", "executorch", ("executorch",)),
    "tflite": ("shvit_edge.backends.tflite", "tflite", ("litert-torch", "ai-edge-litert", "ai-edge-quantizer")),
    "onnx": ("shvit_edge.backends.onnx", "onnx", ("onnx", "onnxruntime", "onnxscript")),
}

@dataclass(frozen=True)
class Runner:
    """An artifact loaded in its runtime: call it with an input array, get the first output back.

    ``input_name``, ``input_shape`` (``None`` for a dynamic axis) and ``input_dtype`` are what the runtime
    reports of the loaded artifact, not what a manifest says, so a manifest can be checked against them.
    """

    run: Callable[[np.ndarray], np.ndarray]
    runtime: str
    input_name: str
    input_shape: tuple[int | None, ...]
    input_dtype: str

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.run(x)


@dataclass(frozen=True)
class BackendResult:
    """What a backend reports about the artifact it wrote."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    #: ``none`` (the input is a normalized tensor) or ``in-model`` (an image input that normalizes itself)
    preprocessing_applied: str = "none"
    details: dict = field(default_factory=dict)
    quantization: Quantization | None = None


class Backend(Protocol):
    NAME: str
    SUFFIX: str
    #: the modules ``load`` imports (the runtime itself), so a benchmark can import them before timing a load
    RUNTIME_MODULES: tuple[str, ...]

    def is_available(self) -> bool: ...

    def export(self, job, out) -> BackendResult: ...

    def load(self, path, manifest=None, threads: int | None = None) -> Runner: ...

    def cannot_run_here(self, path, manifest) -> str | None:
        """Why the artifact cannot run on this machine (verify then skips it), or None. A backend that can
        say so also has ``structural_problems(path, manifest) -> (problems, facts)``, the check that runs
        instead."""


class MissingExtraError(UsageError):
    """The backend's optional dependencies are not installed (exit 2)."""


def get_backend(name: str):
    """The backend module registered under ``name``; its library is not imported yet."""
    if name not in REGISTRY:
        raise UsageError(f"unknown backend {name!r}; known: {', '.join(REGISTRY)}")
    return importlib.import_module(REGISTRY[name][0])


def require(name: str):
    """The backend module, or one line telling how to install its extra."""
    backend = get_backend(name)
    if not backend.is_available():
        extra = REGISTRY[name][1]
        raise MissingExtraError(f"the {name} backend needs its extra: pip install 'shvit-edge[{extra}]'")
    return backend


def modules_available(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def library_versions(name: str) -> dict[str, str]:
    versions = {}
    for dist in REGISTRY[name][2]:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions
