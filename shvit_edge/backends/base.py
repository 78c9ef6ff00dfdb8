"""What every backend is: a :class:`Backend` subclass that owns its slice, registered by name.

One backend, one module (or package), one surface. A backend declares its facts as class attributes (name,
artifact suffix, pip extra, the libraries the manifest records, default target profile, quantization modes,
its own export ``Options``) and implements ``export(job, out) -> BackendResult`` and ``load(path, manifest,
threads, setting) -> Runner`` (a callable from numpy arrays to numpy arrays that also reports the input the
runtime itself expects). ``check`` refuses option combinations before any conversion starts; optional
capabilities (a structural check for artifacts that cannot run here, a weight check against the reference)
are declared by class attributes, never found by ``hasattr``. The backend's library is imported inside its
methods, so a missing extra costs nothing until it is used. :mod:`~shvit_edge.backends.registry` finds them.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import numpy as np

from ..errors import UsageError
from ..manifest import Quantization, TensorSpec
from .registry import (MissingExtraError, backend_names, backends, get_backend, option, option_fields, register,
                       require, unregister)

__all__ = ["Backend", "BackendResult", "MissingExtraError", "NoOptions", "QuantMode", "Runner", "backend_names",
           "backends", "get_backend", "library_versions", "modules_available", "option", "option_fields",
           "register", "require", "unregister"]


@dataclass(frozen=True)
class QuantMode:
    """A ``--quantize`` mode a backend offers."""

    name: str
    #: the profile tolerance class verify judges an artifact of this mode by
    tolerance_class: str
    #: whether it needs calibration inputs (``--calibration``)
    calibrated: bool = False
    #: the deployment target it needs at least (e.g. ``iOS17``), if the backend has deployment targets
    min_deployment_target: str | None = None
    #: why it needs that deployment target (said when a profile deploys to an older one)
    needs_why: str = ""


@dataclass(frozen=True)
class NoOptions:
    """The options of a backend that has none of its own."""


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

    #: what the runtime observed over every run so far, for verify's result (e.g. the Core ML interpreter's
    #: fp16 headroom); JSON-ready, or None when it observes nothing
    report: Callable[[], dict] | None = None

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


class Backend:
    """A deployment backend. Subclass it, set the class attributes, implement :meth:`export` and :meth:`load`,
    and decorate the class with :func:`register`."""

    #: the name ``--target`` and manifests use
    name: ClassVar[str]
    #: its name in messages and reports ("Core ML")
    title: ClassVar[str]
    #: the artifact's file suffix (a folder for Core ML)
    suffix: ClassVar[str]
    #: the pip extra that installs its libraries (``pip install 'shvit-edge[EXTRA]'``)
    extra: ClassVar[str]
    #: the distributions whose versions go into the manifest
    libraries: ClassVar[tuple[str, ...]] = ()
    #: the modules ``load`` imports (the runtime itself), so a benchmark can import them before timing a load
    runtime_modules: ClassVar[tuple[str, ...]] = ()
    #: modules importing the runtime would pull in that running an artifact never needs (a converter's
    #: frontends): a worker process that only loads and runs artifacts keeps them out (:meth:`import_runtime`)
    runtime_unneeded: ClassVar[tuple[str, ...]] = ()
    #: the modules its extra installs: the backend is available when all of them can be imported
    requires: ClassVar[tuple[str, ...]] = ()
    #: the target profile (``targets/*.toml``) the backend's name stands for on the command line
    default_profile: ClassVar[str]
    #: the ``--quantize`` modes it offers (a profile's ``quantization`` list says which its device takes)
    quantization_modes: ClassVar[tuple[QuantMode, ...]] = ()
    #: ``--calibration-method`` choices for ``--quantize int8``, the default first: the quantizer's own range
    #: estimators (none: the option does not apply)
    calibration_methods: ClassVar[tuple[str, ...]] = ()
    #: ``--dfq default`` for ``--quantize int8`` (None: data-free transforms do not apply to this backend)
    dfq_default: ClassVar[str | None] = None
    #: whether ``--calibration-augment`` applies (its quantizer was measured with augmented calibration)
    augments_calibration: ClassVar[bool] = False
    #: where it comes in ``--target all``, the CLI's options and reports (lower first; then by name)
    rank: ClassVar[int] = 100
    #: relative conversion cost: a parallel export starts the most expensive target first
    export_cost: ClassVar[int] = 1
    #: the colour of its series in bench reports
    colour: ClassVar[str] = "#9467bd"
    #: its own export options (a frozen dataclass; fields made with :func:`option` are CLI options of export)
    Options: ClassVar[type] = NoOptions
    #: declares :meth:`structural_problems`: verify runs it on every artifact (the only check for one that
    #: cannot run here)
    has_structural_check: ClassVar[bool] = False
    #: declares :meth:`weights_for_reference` and :meth:`reference_problems`
    has_reference_check: ClassVar[bool] = False
    #: runtime settings that execute the artifact by interpretation on any machine (Core ML's ``coreml-sim``):
    #: verify runs them, bench does not time them; ``verify --runtime NAME`` adds one beside the real runtime
    interpreters: ClassVar[tuple[str, ...]] = ()
    #: declares :meth:`write_bundled_program`: the runtime's own self-checking format of the artifact with test
    #: inputs and expected outputs (ExecuTorch's ``.bpte``), which ``shvit-edge bundle`` writes beside it
    bundled_program_suffix: ClassVar[str | None] = None

    def is_available(self) -> bool:
        """Whether its extra is installed: every module of :attr:`requires` (default: of
        :attr:`runtime_modules`) can be found."""
        return modules_available(*(self.requires or self.runtime_modules))

    def import_runtime(self) -> None:
        """Import :attr:`runtime_modules` in a process that only loads and runs artifacts (a verify, bench or
        harness worker), keeping out the :attr:`runtime_unneeded` modules it has not imported yet."""
        import sys

        for module in self.runtime_unneeded:
            sys.modules.setdefault(module, None)  # ``import module`` now raises ImportError: "not installed"
        for module in self.runtime_modules:
            importlib.import_module(module)

    def check(self, profile, common, options) -> None:
        """Raise a :class:`~shvit_edge.errors.UsageError` for options this backend cannot export for ``profile``
        (``common``: the :class:`~shvit_edge.export.ExportOptions`; ``options``: this backend's ``Options``).
        Run for every requested target before the first conversion starts."""

    def artifact_tags(self, profile, common, options, precision: str) -> tuple[str, ...]:
        """What distinguishes this backend's artifact in its file name, besides the common parts."""
        return ()

    def export(self, job, out) -> BackendResult:
        raise NotImplementedError

    def load(self, path, manifest=None, threads: int | None = None, setting: str | None = None) -> Runner:
        raise NotImplementedError

    def runtime_settings(self, profile) -> tuple[str | None, ...]:
        """The runtime settings verify runs an artifact under, one load each (Core ML's compute units); the
        default is one run with the runtime's defaults (``None``)."""
        return (None,)

    def cannot_run_here(self, path, manifest) -> str | None:
        """Why the artifact cannot run in its real runtime on this machine (bench then skips it, and so does
        verify unless every setting it runs is an :attr:`interpreters` one), or None."""
        return None

    def structural_problems(self, path, manifest) -> tuple[list[str], dict]:
        """With :attr:`has_structural_check`: the problems found checking the artifact against its manifest
        without running it, and the facts that were checked."""
        raise NotImplementedError

    def weights_for_reference(self, path, manifest) -> dict:
        """With :attr:`has_reference_check`: arrays read from the artifact to compare with the reference model."""
        raise NotImplementedError

    def reference_problems(self, arrays: dict, source, manifest) -> list[str]:
        """With :attr:`has_reference_check`: what is wrong with ``arrays`` against the reference ``source``."""
        raise NotImplementedError

    def write_bundled_program(self, path, cases, out) -> None:
        """With :attr:`bundled_program_suffix`: write at ``out`` the artifact at ``path`` with its test cases,
        ``cases`` being (input batch, expected output batch) numpy pairs in the artifact's own layout."""
        raise NotImplementedError

    # -- derived facts, the same for every backend --

    def mode(self, name: str) -> QuantMode | None:
        return next((m for m in self.quantization_modes if m.name == name), None)

    def option_flags(self, options) -> list[str]:
        """The CLI flags (with their value) of ``options`` that differ from the defaults: the options a user set."""
        default = self.Options()
        set_flags = []
        for f in option_fields(self.Options):
            value = getattr(options, f.name)
            if value != getattr(default, f.name):
                flag = f.metadata["cli"]["flag"]
                set_flags.append(flag if isinstance(value, bool) else f"{flag} {value}")
        return set_flags

    def check_choices(self, options) -> None:
        """A usage error for an option value outside its declared choices."""
        for f in option_fields(self.Options):
            choices = f.metadata["cli"]["choices"]
            value = getattr(options, f.name)
            if choices and value not in choices and not (value is None and f.default is None):
                raise UsageError(f"{f.metadata['cli']['flag']} must be one of {', '.join(choices)}")


def modules_available(*modules: str) -> bool:
    """Whether every module can be imported (found, not imported; a dotted name whose parent package is missing
    is not available either, where ``find_spec`` itself would raise)."""
    def found(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            return False

    return all(found(m) for m in modules)


def library_versions(name: str) -> dict[str, str]:
    versions = {}
    for dist in get_backend(name).libraries:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions
