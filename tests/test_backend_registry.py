"""The backend registry: a contract every registered backend keeps, a fake backend that goes through export,
verify and bench registered from this file alone, and every target's options checked before any conversion.

This module imports only shvit_edge, numpy, pytest and torch (no conftest at module level): verify's and bench's
worker processes import it from its file to register the fake backend there too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from shvit_edge.backends.base import (Backend, BackendResult, MissingExtraError, NoOptions, QuantMode, Runner,
                                      backends, get_backend, option, option_fields, register, require, unregister)
from shvit_edge.errors import UsageError
from shvit_edge.manifest import TensorSpec

ROOT = Path(__file__).resolve().parent.parent
BUILT_IN = tuple(backends())
#: the base tier (tests/test_base_install.py): no extra is importable
BASE_INSTALL = os.environ.get("SHVIT_EDGE_BASE_INSTALL") == "1"


# -- the fake backend: torch.export's own serialized program, run by torch itself --

@dataclasses.dataclass(frozen=True)
class FakeOptions:
    fake_single: bool = option(False, flag="--fake-single", help="Fake: refuse a batch other than 1.")


class FakeBackend(Backend):
    name = "fake"
    title = "Fake"
    suffix = ".pt2"
    extra = "fake"
    libraries = ("torch",)
    runtime_modules = ("torch",)
    default_profile = "fake-host"  # set to the written profile's path by the fixture
    quantization_modes = (QuantMode("fake-int4", "int8"),)
    Options = FakeOptions
    colour = "#000000"

    def check(self, profile, common, options) -> None:
        if options.fake_single and common.batch != 1:
            raise UsageError("--fake-single takes batch 1")

    def artifact_tags(self, profile, common, options, precision):
        return ("single",) if options.fake_single else ()

    def export(self, job, out) -> BackendResult:
        import torch

        torch.export.save(job.exported_program(job.example_input()), str(out))
        h, w = job.resolution
        batch = job.options.batch
        return BackendResult(inputs=(TensorSpec("image", (batch, 3, h, w), "float32", "NCHW"),),
                             outputs=(TensorSpec("logits", (batch, job.source.num_classes), "float32", "NC"),),
                             details={"runtime": "torch.export"})

    def load(self, path, manifest=None, threads=None, setting=None) -> Runner:
        import torch

        module = torch.export.load(str(path)).module()
        shape = tuple(manifest.inputs[0].shape)

        def run(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

        return Runner(run, f"torch.export {torch.__version__}", "image", shape, "float32")


FAKE_PROFILE = """
name = "fake-host"
description = "A fake backend's profile: this host, through torch.export"
backend = "fake"
[device]
name = "this host"
os = "linux"
arch = "x86_64"
[export]
precision = "fp32"
precisions = ["fp32"]
quantization = ["fake-int4"]
[tolerances.fp32]
cosine = 0.9999
max_abs = 0.001
top1_agreement = 1.0
[tolerances.int8]
cosine = 0.99
max_abs = 1.0
top1_agreement = 0.8
"""


@pytest.fixture
def fake_backend(tmp_path_factory):
    """The fake backend, registered for one test (registered at import, it would join every other test's
    ``--target all``), with its default profile written to a file."""
    profile = tmp_path_factory.mktemp("fake-profile") / "fake-host.toml"
    profile.write_text(FAKE_PROFILE, encoding="utf-8")
    FakeBackend.default_profile = str(profile)
    register(FakeBackend)
    try:
        yield get_backend("fake")
    finally:
        unregister("fake")


def test_the_fake_backend_goes_through_export_verify_and_bench(fake_backend, tmp_path):
    """Nothing in shvit_edge names it: export, verify (in its worker process) and bench (in its) find it
    through the registry alone."""
    from shvit_edge.bench import BenchOptions, bench
    from shvit_edge.export import ExportOptions, export, load_source, resolve_targets
    from shvit_edge.manifest import read_manifest
    from shvit_edge.verify import VerifyOptions, verify

    assert "fake" in backends()
    source = load_source(variant="shvit_s1", checkpoint=None)
    (profile,) = resolve_targets("fake")
    assert profile.backend == "fake"
    report = export(source, [profile], ExportOptions(resolution=(64, 64)), tmp_path)
    (artifact,) = report.artifacts
    assert artifact.path.suffix == ".pt2" and artifact.path.is_file()
    manifest = read_manifest(artifact.manifest)
    assert manifest.target == "fake" and manifest.versions["torch"]
    (result,) = verify([artifact.path], VerifyOptions(samples=2))
    assert result.status == "pass", result.reason
    assert result.runtime.startswith("torch.export")
    assert read_manifest(artifact.manifest).verification["results"][0]["status"] == "pass"
    doc = bench([artifact.path], BenchOptions(iterations=3, warmup=1, rounds=1, baseline=False)).as_json()
    assert not doc["failures"] and not doc["skipped"], doc
    (row,) = doc["results"]
    assert row["target"] == "fake" and row["latency_ms"]["p50"] > 0 and row["verify"]["status"] == "pass"


class FailingBackend(FakeBackend):
    """Its converter fails, in whichever process runs it, after telling the fake backend's export (which waits
    for that, in the parent) that it ran; so a parallel export's worker is the one that fails."""

    name = "failing"
    title = "Failing"
    suffix = ".fail"
    export_cost = 0  # queued after the fake, so a worker takes it while the parent exports the fake

    @dataclasses.dataclass(frozen=True)
    class Options:
        pass

    def check(self, profile, common, options) -> None:
        pass

    def artifact_tags(self, profile, common, options, precision):
        return ()

    def export(self, job, out) -> BackendResult:
        Path(os.environ["SHVIT_EDGE_TEST_MARKER"]).write_text(str(os.getpid()))
        raise RuntimeError(f"the converter failed in process {os.getpid()}")


class WaitingFakeBackend(FakeBackend):
    """The fake backend, waiting (at most a minute) until the failing one has run."""

    export_cost = 5

    def export(self, job, out) -> BackendResult:
        import time

        marker, deadline = Path(os.environ["SHVIT_EDGE_TEST_MARKER"]), time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return super().export(job, out)


def test_a_parallel_exports_failed_target_is_reported_by_name(tmp_path, tmp_path_factory, monkeypatch):
    """A worker's failure is that target's, with the run's other artifacts kept: the fake backend is exported in
    this process, the failing one in the worker, which dies with nothing written."""
    from shvit_edge.export import ExportOptions, export, load_source
    from shvit_edge.targets import load_profile

    marker = tmp_path / "ran"
    monkeypatch.setenv("SHVIT_EDGE_TEST_MARKER", str(marker))
    folder = tmp_path_factory.mktemp("profiles")
    (folder / "fake-host.toml").write_text(FAKE_PROFILE, encoding="utf-8")
    (folder / "failing-host.toml").write_text(FAKE_PROFILE.replace('"fake-host"', '"failing-host"').replace(
        'backend = "fake"', 'backend = "failing"').replace('quantization = ["fake-int4"]', "quantization = []"))
    for cls in (WaitingFakeBackend, FailingBackend):
        cls.default_profile = str(folder / f"{cls.name}-host.toml")
        register(cls)
    try:
        profiles = [load_profile(folder / "fake-host.toml"), load_profile(folder / "failing-host.toml")]
        out = tmp_path / "out"
        report = export(load_source(variant="shvit_s1", checkpoint=None), profiles, ExportOptions(resolution=(64, 64)),
                        out, jobs=2)
    finally:
        unregister("fake")
        unregister("failing")
    assert [a.target for a in report.artifacts] == ["fake"]
    (failure,) = report.failures
    assert failure.target == "failing" and failure.exit_code == 1 and "the converter failed" in failure.message
    assert int(marker.read_text()) != os.getpid(), "the failing target ran in this process, not in a worker"
    name = "shvit_s1_64x64_fake-host.pt2"  # the profile's name: not the backend's default (a path here)
    assert sorted(p.name for p in out.iterdir()) == [name, name + ".json"]


def test_the_fake_backends_own_option_is_checked_before_any_conversion(fake_backend, tmp_path, monkeypatch):
    from shvit_edge.export import ExportOptions, export, load_source, resolve_targets

    converted = []
    for backend in backends().values():
        monkeypatch.setattr(type(backend), "export", lambda self, job, out: converted.append(self.name))
    source = load_source(variant="shvit_s1", checkpoint=None)
    options = ExportOptions.create(resolution=(64, 64), batch=2, fake_single=True)
    with pytest.raises(UsageError, match="--fake-single takes batch 1"):
        export(source, resolve_targets("onnx,fake"), options, tmp_path, jobs=1)
    assert converted == [] and not any(tmp_path.iterdir())
    with pytest.raises(UsageError, match="--fake-single applies to the fake target only"):
        export(source, resolve_targets("onnx"), ExportOptions.create(resolution=(64, 64), fake_single=True), tmp_path)


def test_a_backend_that_breaks_the_contract_is_refused_at_registration():
    class NoSuffix(FakeBackend):
        name = "nosuffix"
        suffix = "pt2"

    class TakenOption(FakeBackend):
        name = "taken"

        @dataclasses.dataclass(frozen=True)
        class Options:
            layout: str = option("nchw", flag="--my-layout", help="clashes with TFLite's option name")

    class Mutable(FakeBackend):
        name = "mutable"

        @dataclasses.dataclass
        class Options:
            x: bool = False

    class NotABackend:
        name = "plain"

    for cls, message in ((NoSuffix, "suffix"), (TakenOption, "tflite backend has an option"),
                         (Mutable, "frozen dataclass"), (NotABackend, "not a Backend")):
        with pytest.raises(TypeError, match=message):
            register(cls)
        assert cls.name not in backends()


# -- the contract of every registered backend --

@pytest.mark.parametrize("name", BUILT_IN)
def test_backend_contract(name):
    from shvit_edge.cli import cli
    from shvit_edge.export import ExportOptions, artifact_name, check_options
    from shvit_edge.targets import resolve_target

    backend = get_backend(name)
    assert backend.name == name and backend.title and backend.suffix.startswith(".")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert backend.extra in pyproject["project"]["optional-dependencies"], "its extra is not in pyproject.toml"
    pinned = (ROOT / "constraints.txt").read_text(encoding="utf-8").lower()
    for library in backend.libraries:
        assert f"{library.lower()}==" in pinned, f"{library} is not pinned in constraints.txt"
    if BASE_INSTALL:  # the base tier: unavailable, and saying how to install it
        assert not backend.is_available()
        with pytest.raises(MissingExtraError, match=rf"pip install 'shvit-edge\[{backend.extra}\]'"):
            require(name)
    else:
        assert backend.is_available(), f"{name}'s extra is installed in the test environment"
    profile = resolve_target(name)
    assert profile.backend == name and profile.name == backend.default_profile
    assert set(profile.export.quantization) <= {m.name for m in backend.quantization_modes}
    for mode in backend.quantization_modes:
        assert mode.tolerance_class in profile.tolerances or mode.name not in profile.export.quantization
    options = ExportOptions(resolution=(64, 64))
    check_options([profile], options)  # the defaults pass their own checks
    assert artifact_name("shvit_s1", profile, options, profile.export.precision, backend.suffix).endswith(
        backend.suffix)
    assert backend.runtime_settings(profile), "one run at least"
    flags = {opt for p in next(c for n, c in cli.commands.items() if n == "export").params for opt in p.opts}
    for f in option_fields(backend.Options):
        assert f.metadata["cli"]["flag"] in flags, f"{f.metadata['cli']['flag']} is not an option of export"
    own = {"structural_problems": backend.has_structural_check,
           "weights_for_reference": backend.has_reference_check, "reference_problems": backend.has_reference_check}
    for method, declared in own.items():
        overridden = getattr(type(backend), method) is not getattr(Backend, method)
        assert overridden == declared, f"{method}: declared {declared}, implemented {overridden}"
    assert backend.Options is NoOptions or dataclasses.is_dataclass(backend.Options)


@pytest.mark.extras("coreml", "executorch", "tflite", "onnx")
@pytest.mark.parametrize("name", BUILT_IN)
def test_every_backend_exports_and_verifies(name, untrained_s1_64, tmp_path):
    """The shared untrained S1 folder holds one artifact per backend, written with the backend's suffix and a
    manifest naming it; verify runs it on this host's runtime (or, where it cannot run, checks its structure)."""
    from conftest import copy_folder
    from shvit_edge.manifest import read_manifest
    from shvit_edge.targets import resolve_target
    from shvit_edge.verify import VerifyOptions, verify

    backend = get_backend(name)
    folder = copy_folder(untrained_s1_64, tmp_path)
    (path,) = [p for p in folder.iterdir() if p.name.endswith(backend.suffix)]
    assert read_manifest(path.with_name(path.name + ".json")).target == name
    results = verify([path], VerifyOptions(samples=2))
    settings = backend.runtime_settings(resolve_target(name))
    interpreted = all(s in backend.interpreters for s in settings)  # Core ML off macOS: coreml-sim
    if backend.cannot_run_here(path, read_manifest(path.with_name(path.name + ".json"))) and not interpreted:
        assert [r.status for r in results] == ["skipped"], [(r.status, r.reason) for r in results]
        assert backend.has_structural_check and "structure" in results[0].runtime
    else:  # one run per runtime setting, each judged
        assert [r.status for r in results] == ["pass"] * len(settings), [(r.status, r.reason) for r in results]


# -- every target's options are checked before the first conversion --

CROSS_OPTION_ERRORS = [
    (["--target", "onnx,coreml", "--batch", "2"], "image input takes one image"),
    (["--target", "coreml,onnx", "--batch", "2"], "image input takes one image"),
    (["--target", "onnx,tflite", "--quantize", "palettize-4"], "does not offer --quantize palettize-4"),
    (["--target", "onnx,coreml", "--quantize", "w8a8", "--calibration", "random"], "does not offer --quantize w8a8"),
    (["--target", "coreml", "--quantize", "w8a8", "--calibration", "random"], "deployment target iOS17"),
    (["--target", "onnx,tflite", "--reduce-range"], "--reduce-range applies to --quantize int8"),
    (["--target", "tflite,coreml", "--reduce-range"], "applies to the onnx target only"),
    (["--target", "onnx,executorch", "--layout", "nhwc"], "applies to the tflite target only"),
    (["--target", "onnx,tflite", "--coreml-io", "tensor"], "applies to the coreml target only"),
    (["--target", "onnx,coreml", "--delegate", "coreml"], "applies to the executorch target only"),
    (["--target", "coreml,executorch", "--dynamic-batch"], "applies to the onnx target only"),
    (["--target", "onnx,executorch", "--quantize", "int8"], "give --calibration"),
    (["--target", "onnx,executorch", "--calibration-method", "minmax", "--quantize", "int8", "--calibration",
      "random"], "export one target at a time"),
    (["--target", "onnx,tflite", "--keep-float", "head"], "--keep-float applies with --quantize"),
]


@pytest.mark.parametrize("args,message", CROSS_OPTION_ERRORS, ids=[" ".join(a) for a, _ in CROSS_OPTION_ERRORS])
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_cross_option_error_exits_2_before_any_conversion(args, message, jobs, tmp_path, monkeypatch):
    from shvit_edge.cli import cli

    converted = []
    for backend in backends().values():
        monkeypatch.setattr(type(backend), "export",
                            lambda self, job, out: converted.append(self.name) or pytest.fail("converted"))
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["export", "--variant", "shvit_s1", "--resolution", "64", "--out", str(out),
                                      "--jobs", jobs, *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    assert converted == [] and not out.exists()


def test_backend_options_reach_their_backend_only():
    from shvit_edge.export import ExportOptions

    options = ExportOptions.create(resolution=(64, 64), layout="nhwc", coreml_io="tensor", dynamic_batch=True)
    assert options.for_backend("tflite").layout == "nhwc"
    assert options.for_backend("coreml").coreml_io == "tensor"
    assert options.for_backend("onnx").dynamic_batch is True
    assert options.for_backend("executorch") == get_backend("executorch").Options()
    with pytest.raises(TypeError, match="unknown export option"):
        ExportOptions.create(resolution=(64, 64), no_such_option=1)


def test_json_of_the_registry_is_what_variants_and_help_show():
    """The CLI's --quantize help lists every backend's modes from the registry."""
    from shvit_edge.cli import cli

    result = CliRunner().invoke(cli, ["export", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for backend in backends().values():
        for mode in backend.quantization_modes:
            assert mode.name in text
    assert json.dumps(sorted(backends())) == json.dumps(sorted(BUILT_IN))


@pytest.mark.base_only
@pytest.mark.parametrize("name", BUILT_IN)
def test_without_its_extra_export_says_how_to_install_it_before_converting_anything(name, tmp_path):
    """A base install: exporting to any target (alone, or after another) exits 2 with the pip command, before
    anything is converted or written."""
    from shvit_edge.cli import cli

    backend = get_backend(name)
    out = tmp_path / "out"
    for targets in (name, f"{name},onnx" if name != "onnx" else "onnx,tflite"):
        result = CliRunner().invoke(cli, ["export", "--variant", "shvit_s1", "--resolution", "64", "--out", str(out),
                                          "--target", targets, "--jobs", "1"])
        assert result.exit_code == 2, result.output
        first = targets.split(",")[0]
        assert f"pip install 'shvit-edge[{get_backend(first).extra}]'" in " ".join(result.output.split())
        assert not out.exists()
    assert not backend.is_available()
