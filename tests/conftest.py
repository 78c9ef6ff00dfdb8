from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT.parent / "shared" / "fixtures"


#: the base tier (tests/test_base_install.py): the extras' modules cannot be imported (tests/base_install/)
BASE_INSTALL = os.environ.get("SHVIT_EDGE_BASE_INSTALL") == "1"


def pytest_configure(config):
    """Under pytest-xdist every worker shares the machine's cores: torch's OpenMP threads spinning against
    another worker's made a forward pass 14x slower here (1.65 s against 0.115 s, S1, 5 images), so each
    worker computes on one thread."""
    config.addinivalue_line("markers", "extras(*names): the test needs these extras (skipped in the base tier)")
    config.addinivalue_line("markers", "base_only: the test runs only in the base tier (it checks what a base "
                                       "install does)")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: the order below counts the items that run
def pytest_collection_modifyitems(config, items):
    """In the base tier, a test that needs an extra is skipped, naming it; outside it, a base-only test is. Under
    pytest-xdist the heavy modules start first (:func:`heavy_first`)."""
    for item in items:
        extras = item.get_closest_marker("extras")
        if BASE_INSTALL and extras is not None:
            item.add_marker(pytest.mark.skip(reason=f"needs the {', '.join(extras.args)} extra: not in a base "
                                                    "install"))
        if not BASE_INSTALL and item.get_closest_marker("base_only") is not None:
            item.add_marker(pytest.mark.skip(reason="runs in the base tier only (tests/test_base_install.py)"))
    scheduling = getattr(config, "workerinput", {}).get("shvit_edge_scheduling")
    if scheduling is not None and scheduling["dist"] == "load" and scheduling["workers"] > 1:
        items[:] = heavy_first(items, scheduling["workers"], scheduling["maxschedchunk"])


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """pytest-xdist (in the controller): tell each worker how the controller schedules, for :func:`heavy_first`."""
    config = node.config
    node.workerinput["shvit_edge_scheduling"] = {"dist": config.getoption("dist"),
                                                 "workers": len(config.getoption("tx") or ()),
                                                 "maxschedchunk": config.getoption("maxschedchunk", None)}


#: rough seconds of work in each heavy test module (exports, conversions, runtimes; pytest -n 2 on 2 cores,
#: --durations of the 29-minute run of 04:09, less what sharing exports saved since): see :func:`heavy_first`
HEAVY_MODULES = {
    "test_export.py": 800, "test_coreml_sim.py": 360, "test_quantize_coreml.py": 340, "test_quantize.py": 330,
    "test_verify_hardening.py": 250, "test_sensitivity.py": 145, "test_backend_registry.py": 130,
    "test_harness_loop.py": 120, "test_promises_export.py": 110, "test_coreml_preprocessing.py": 110,
    "test_quantize_tflite.py": 110, "test_base_install.py": 55, "test_device.py": 40, "test_efficientvit.py": 200,
    "test_sepvit.py": 200, "test_mobilevitv2.py": 200, "test_family_pipeline.py": 150,
}


def heavy_first(items: list, workers: int, maxschedchunk: int | None) -> list:
    """The items reordered so that every pytest-xdist worker starts on heavy modules and the run ends on light
    tests. In file order the heaviest modules (test_quantize*, test_sensitivity, test_verify_hardening) came
    last: one worker could run a two-minute export while the other had nothing left to take.

    xdist's ``load`` scheduling sends each worker a first chunk of consecutive items (a quarter of its share),
    then refills the workers from the rest in order. So the heavy modules are split into one bin per worker
    (longest first, each to the lightest bin; a module stays whole and in its own order, so its module fixtures
    are set up once) and bin k is placed where worker k's first chunk starts, whole light modules filling the
    gaps; the other light modules follow in file order. The order is the same on every worker (xdist checks
    that). Only under ``--dist load`` (what ``-n`` gives); a module missing from :data:`HEAVY_MODULES` only
    loses its place, never a test."""
    chunk = max(min(len(items) // workers // 4, maxschedchunk or len(items)), 2)
    modules: dict[str, list] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::", 1)[0].rsplit("/", 1)[-1], []).append(item)
    heavy = sorted((name for name in modules if name in HEAVY_MODULES), key=lambda n: -HEAVY_MODULES[n])
    bins: list[list[str]] = [[] for _ in range(workers)]
    loads = [0.0] * workers
    for name in heavy:
        k = loads.index(min(loads))
        bins[k].append(name)
        loads[k] += HEAVY_MODULES[name]
    light = [name for name in modules if name not in HEAVY_MODULES]
    ordered: list = []
    for k, names in enumerate(bins):
        for name in list(light) if k else ():  # whole light modules that fit before worker k's first chunk
            if len(ordered) + len(modules[name]) <= k * chunk:
                ordered.extend(modules[name])
                light.remove(name)
        for name in names:
            ordered.extend(modules[name])
    for name in light:
        ordered.extend(modules[name])
    assert len(ordered) == len(items)
    return ordered


@contextlib.contextmanager
def time_limit(seconds: int):
    """Fail with TimeoutError instead of hanging when the body takes longer than ``seconds`` (SIGALRM; outside
    the main thread, where signals cannot be used, the body runs unguarded)."""
    def expire(signum, frame):
        raise TimeoutError(f"took longer than {seconds} s")

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def built_once(tmp_path_factory, name: str, build) -> Path:
    """A folder ``build(folder)`` fills, built once for the whole session even under pytest-xdist, where every
    worker has its own session fixtures: the first worker to ask builds it under a file lock in the run's shared
    temporary folder, the others wait and reuse it (pytest-xdist's documented recipe). An export of all four
    targets takes about 75 s here; built per worker it was built three times. Tests must not write into it:
    copy it first (verify writes manifests)."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


def copy_folder(folder: Path, tmp_path: Path, name: str = "artifacts") -> Path:
    """A private copy of a folder of artifacts (verify writes the manifests)."""
    import shutil

    return Path(shutil.copytree(folder, tmp_path / name, symlinks=True))


@pytest.fixture(scope="session")
def untrained_s1_64_export(tmp_path_factory):
    """``shvit-edge export --target all --variant shvit_s1 --resolution 64 --jobs 1 --json``: untrained S1 (seed 0)
    at 64x64 for every target, built once per run (:func:`built_once`) through the command line, whose exit code
    and JSON document are kept (test_export.py checks them) beside the output folder ``out``. Read-only."""
    import json
    from types import SimpleNamespace

    def build(folder: Path) -> None:
        from click.testing import CliRunner

        from shvit_edge.cli import cli

        result = CliRunner().invoke(cli, ["export", "--target", "all", "--variant", "shvit_s1", "--resolution", "64",
                                          "--jobs", "1", "--out", str(folder / "out"), "--json"])
        (folder / "run.json").write_text(json.dumps({"exit_code": result.exit_code, "stdout": result.stdout,
                                                     "output": result.output[-5000:]}), encoding="utf-8")

    folder = built_once(tmp_path_factory, "untrained_s1_64", build)
    run = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    return SimpleNamespace(out=folder / "out", exit_code=run["exit_code"], stdout=run["stdout"], output=run["output"])


@pytest.fixture(scope="session")
def untrained_s1_64(untrained_s1_64_export) -> Path:
    """Untrained S1 (seed 0) at 64x64 for every target, in one folder, built once per run (see
    :func:`untrained_s1_64_export`): for latency, robustness and structure tests, where the weights do not matter.
    Copy before writing."""
    assert untrained_s1_64_export.exit_code == 0, untrained_s1_64_export.output
    return untrained_s1_64_export.out


@pytest.fixture(scope="session")
def calibrated_224(calibrated_pth, tmp_path_factory) -> Path:
    """S1 from the fixture checkpoint that reacts to its input as Core ML (fp16, image I/O), ONNX and TFLite
    artifacts at 224, in one folder, built once per run (:func:`built_once`; copy before writing)."""
    def build(folder):
        from shvit_edge.export import ExportOptions, export, load_source, resolve_targets

        source = load_source(variant=None, checkpoint=str(calibrated_pth))
        report = export(source, resolve_targets("coreml,onnx,tflite"), ExportOptions(resolution=(224, 224)), folder,
                        jobs=1)
        assert not report.failures, report.failures

    return built_once(tmp_path_factory, "verify_s1_calibrated_224", build)


@pytest.fixture(scope="session")
def calibrated_224_executorch(calibrated_pth, tmp_path_factory) -> Path:
    """The ExecuTorch (XNNPACK) artifact of :func:`calibrated_224`'s checkpoint at 224, alone in a folder, built once
    per run (copy before writing)."""
    def build(folder):
        from shvit_edge.export import ExportOptions, export, load_source, resolve_targets

        source = load_source(variant=None, checkpoint=str(calibrated_pth))
        report = export(source, resolve_targets("executorch"), ExportOptions(resolution=(224, 224)), folder, jobs=1)
        assert not report.failures, report.failures

    return built_once(tmp_path_factory, "calibrated_224_executorch", build)


@pytest.fixture(scope="session")
def calibrated_coreml_320x192(calibrated_pth, tmp_path_factory) -> Path:
    """:func:`calibrated_224`'s Core ML export (default options: fp16, image I/O) at 320x192, alone in a folder,
    built once per run (test_export.py and test_coreml_sim.py both judge it; copy before writing)."""
    def build(folder):
        from shvit_edge.export import ExportOptions, export, load_source, resolve_targets

        source = load_source(variant=None, checkpoint=str(calibrated_pth))
        report = export(source, resolve_targets("coreml"), ExportOptions(resolution=(320, 192)), folder, jobs=1)
        assert not report.failures, report.failures

    return built_once(tmp_path_factory, "calibrated_coreml_320x192", build)


@pytest.fixture(scope="session")
def s1_bundle(calibrated_224, calibrated_224_executorch, images_dir, tmp_path_factory) -> Path:
    """``shvit-edge bundle`` of the calibrated S1 artifacts of every target at 224 (the five photos and two random
    inputs; no warm-up, 2 iterations), built once per run; read-only."""
    def build(folder):
        from click.testing import CliRunner

        from shvit_edge.cli import cli

        result = CliRunner().invoke(cli, ["bundle", str(calibrated_224), str(calibrated_224_executorch), "--out",
                                          str(folder / "bundle"), "--images", str(images_dir), "--samples", "2",
                                          "--warmup", "0", "--iterations", "2"])
        assert result.exit_code == 0, result.output

    return built_once(tmp_path_factory, "s1_bundle", build) / "bundle"


@pytest.fixture(scope="session")
def s1_bundle_result(s1_bundle, tmp_path_factory) -> Path:
    """``shvit-edge harness run`` of :func:`s1_bundle` on this machine: its result document, made once per run;
    read-only."""
    def build(folder):
        from click.testing import CliRunner

        from shvit_edge.cli import cli

        result = CliRunner().invoke(cli, ["harness", "run", str(s1_bundle), "--out", str(folder / "result.json")])
        assert result.exit_code == 0, result.output

    return built_once(tmp_path_factory, "s1_bundle_result", build) / "result.json"


def fixture_path(name: str) -> Path:
    path = FIXTURES / name
    if not path.exists():
        pytest.fail(f"shared fixture {path} is missing: CI puts shared/ beside the clone (../shared)")
    return path


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux: read from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def is_running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="session")
def official_pth() -> Path:
    return fixture_path("shvit_s1_official.pth")


@pytest.fixture(scope="session")
def calibrated_pth() -> Path:
    """The S1 checkpoint that reacts to its input (each photo its own class by 4 logits): what parity,
    quantization and preprocessing are judged on. ``official_pth`` is for loading and layouts only."""
    return fixture_path("shvit_s1_calibrated.pth")


@pytest.fixture(scope="session")
def timm_safetensors() -> Path:
    return fixture_path("shvit_s1_official.timm.safetensors")


@pytest.fixture(scope="session")
def images_dir() -> Path:
    return fixture_path("images")


@pytest.fixture(scope="session")
def s1_source(official_pth):
    """The fixture checkpoint loaded for export (session-wide: every quantization test starts from it)."""
    from shvit_edge.export import load_source

    return load_source(variant=None, checkpoint=str(official_pth))


@pytest.fixture(scope="session")
def calibrated_source(calibrated_pth):
    """``shvit_s1_calibrated`` loaded for export, checked once to react to the photos (:func:`assert_reacts`)."""
    from shvit_edge.export import load_source

    source = load_source(variant=None, checkpoint=str(calibrated_pth))
    assert_reacts(source.deploy_model(), photo_inputs())
    return source


def photo_inputs():
    """The five fixture photos through timm's evaluation transform at 224 (float32 (5, 3, 224, 224), from the
    fixtures: independent of this project's image code)."""
    import numpy as np

    return torch.from_numpy(np.load(fixture_path("shvit_s1_calibrated.inputs.npy")))


#: the largest cosine a reference's output on a real input may have with its output on an all-zero input
REACTS_BELOW_COSINE = 0.9


@torch.no_grad()
def assert_reacts(model, inputs) -> None:
    """The guard every parity and quantization test stands on: ``model`` (a callable on a float tensor) must
    react to ``inputs``, or an artifact that ignored its input would pass. Each input's output must have cosine
    below :data:`REACTS_BELOW_COSINE` with the output on an all-zero input of the same shape, and the inputs
    must not all get the same output. ``shvit_s1_official`` fails it (cosine 0.9999); ``shvit_s1_calibrated``
    gives 0.03-0.35 on the photos."""
    inputs = torch.as_tensor(inputs, dtype=torch.float32)
    outputs = torch.as_tensor(model(inputs)).reshape(len(inputs), -1).double()
    zero = torch.as_tensor(model(torch.zeros_like(inputs[:1]))).reshape(1, -1).double()
    cosines = torch.nn.functional.cosine_similarity(outputs, zero.expand_as(outputs), dim=1)
    worst = float(cosines.max())
    assert worst < REACTS_BELOW_COSINE, (
        f"the reference barely reacts to its input: output cosine {worst:.4f} with its output on zeros "
        f"(must be < {REACTS_BELOW_COSINE}); a parity check on it could pass an artifact that ignores its input")
    if len(inputs) > 1:
        assert not torch.allclose(outputs, outputs[:1].expand_as(outputs), rtol=1e-3, atol=1e-3 * float(
            outputs.abs().max())), "the reference gives every input the same output"


@pytest.fixture(scope="session")
def s1_fp32(calibrated_224, calibrated_224_executorch):
    """The fp32 S1 artifact at 224 for a target (onnx, tflite, executorch), what quantized ones compare with:
    ``shvit_s1_calibrated``'s, the quantized ones' checkpoint, as :func:`calibrated_224` and
    :func:`calibrated_224_executorch` export it once per run. Read-only."""
    from types import SimpleNamespace

    from shvit_edge.backends.base import get_backend
    from shvit_edge.manifest import manifest_path, read_manifest

    def get(target: str):
        folder = calibrated_224_executorch if target == "executorch" else calibrated_224
        (path,) = [p for p in folder.iterdir() if p.name.endswith(get_backend(target).suffix)]
        return SimpleNamespace(path=path, manifest=manifest_path(path),
                               size_bytes=read_manifest(manifest_path(path)).artifact.size_bytes)

    return get


@pytest.fixture(scope="session")
def reference_io():
    import numpy as np

    return (torch.from_numpy(np.load(fixture_path("shvit_s1_official.inputs.npy"))),
            torch.from_numpy(np.load(fixture_path("shvit_s1_official.logits.npy"))))


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Trained-like weights (:func:`shvit_edge.models.weights.trained_like`), so no residual branch is zero and
    fusion is really exercised. The residual branches stay at full strength (``branch_gain=1``): the tests'
    tolerances were set on SHViT so (at 0.1x the S3 Core ML fp16 export test failed verify), and EfficientViT's
    tests scale its branches in their own recipe."""
    from shvit_edge.models.weights import trained_like

    return trained_like(model, seed, branch_gain=1.0)
