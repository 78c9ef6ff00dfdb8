"""Export: every target converts, and every artifact that runs here computes what PyTorch computes."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from safetensors.torch import save_file

import shvit_edge
from shvit_edge.backends.base import get_backend
from shvit_edge.cli import cli
from shvit_edge.export import ExportOptions, export, load_source, resolve_targets
from shvit_edge.manifest import read_manifest
from shvit_edge.models.variants import VARIANTS, parse_resolution
from shvit_edge.parity.metrics import compare
from shvit_edge.verify import VerifyOptions, verify

from conftest import assert_reacts, fixture_path, photo_inputs, randomize

RUNNABLE = ("executorch", "tflite", "onnx")  # Core ML predicts only on macOS
TARGETS = ("coreml",) + RUNNABLE
COSINE = 0.99999


@pytest.fixture(scope="session")
def s1_source(calibrated_source):
    """Parity is judged on the checkpoint that reacts to its input (the official fixture barely does)."""
    return calibrated_source


@pytest.fixture(scope="session")
def reference_io():
    """The five photos, preprocessed, and the authors' code's logits for them on ``shvit_s1_calibrated``."""
    return photo_inputs(), torch.from_numpy(np.load(fixture_path("shvit_s1_calibrated.logits.npy")))


@pytest.fixture(scope="session")
def randomized_checkpoints(tmp_path_factory):
    """S2-S4 with trained-like (randomized BatchNorm) weights, saved as checkpoints the way users have them."""
    folder = tmp_path_factory.mktemp("checkpoints")
    paths = {}
    for i, name in enumerate(("shvit_s2", "shvit_s3", "shvit_s4")):
        path = folder / f"{name}.safetensors"
        save_file(randomize(shvit_edge.create_model(name), seed=20 + i).state_dict(), str(path))
        paths[name] = path
    return paths


def _inputs(resolution, reference_io, batch=None):
    """The fixture inputs (resized where the resolution differs), or seeded random ones for other batches."""
    h, w = resolution
    if batch is not None:
        return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(batch))
    x, _ = reference_io
    return x if (h, w) == (224, 224) else F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)


def run_artifact(path: Path, x: torch.Tensor) -> np.ndarray:
    """Run an artifact in its own runtime, on NCHW inputs, as many at a time as its batch takes."""
    manifest = read_manifest(path.with_name(path.name + ".json"))
    runner = get_backend(manifest.target).load(path, manifest)
    batch = manifest.batch
    spec = manifest.inputs[0]
    outs = []
    for start in range(0, x.shape[0], batch):
        chunk = x[start:start + batch].numpy()
        if spec.layout == "NHWC":
            chunk = chunk.transpose(0, 2, 3, 1)
        assert tuple(chunk.shape) == tuple(spec.shape)
        outs.append(runner(np.ascontiguousarray(chunk)))
    return np.concatenate(outs)


def assert_matches(model, path: Path, x: torch.Tensor):
    assert_reacts(model, x)
    with torch.no_grad():
        ref = model(x).numpy()
    metrics = compare(run_artifact(path, x), ref)
    assert metrics.finite and metrics.cosine >= COSINE, (path.name, metrics)
    assert metrics.top1_agreement == 1.0, (path.name, metrics)
    return metrics


def assert_verifies(path: Path, images_dir: Path, samples: int = 4, runs_here: bool | None = None):
    """``shvit-edge verify`` on the five fixture images and a few random inputs: an fp32 artifact passes on its
    runtime (a Core ML package off macOS: in the coreml-sim interpreter); one that cannot run here (an ExecuTorch
    program for Apple's Core ML delegate) is skipped with its structural check passed."""
    results = verify([path], VerifyOptions(images=str(images_dir), samples=samples))
    assert results, path
    runs_here = True if runs_here is None else runs_here
    for r in results:
        expected = "pass" if runs_here else "skipped"
        assert r.status == expected, r
        if expected == "skipped":
            assert "structural check passed" in r.reason, r
        else:
            assert next(iter(r.metrics.values()))["samples"] == 5 + samples, r
    assert read_manifest(path.with_name(path.name + ".json")).verification["results"][0]["status"] == expected
    return results


def _export_one(source, target, out, **options):
    profiles = resolve_targets(target)
    spec = VARIANTS[source.variant]
    resolution = parse_resolution(options.pop("resolution", None), spec.resolution)
    report = export(source, profiles, ExportOptions.create(resolution=resolution, **options), out)
    assert not report.failures, report.failures
    (artifact,) = report.artifacts
    return artifact


#: exports another test's session fixture already makes of ``shvit_s1_calibrated`` (this module's ``s1_source``)
#: with the default options, by (target, resolution): the fixture's name (conftest.py)
SHARED = {**{(t, "224"): "calibrated_224" for t in ("coreml", "onnx", "tflite")},
          ("executorch", "224"): "calibrated_224_executorch", ("coreml", "320x192"): "calibrated_coreml_320x192"}


def _shared_artifact(request, target, resolution, tmp_path=None):
    """The artifact of ``SHARED[(target, resolution)]``, exported once per run by that session fixture: read-only,
    or with ``tmp_path`` a private copy of it and its manifest (verify writes the manifest). Its sha256 and size
    are recomputed from the file, for :func:`_check_manifest` to hold the manifest to."""
    import shutil
    from types import SimpleNamespace

    from shvit_edge.atomic import size_of
    from shvit_edge.manifest import manifest_path

    folder = request.getfixturevalue(SHARED[(target, resolution)])
    (path,) = [p for p in folder.iterdir() if p.name.endswith(get_backend(target).suffix)]
    if tmp_path is not None:
        copy = tmp_path / path.name
        (shutil.copytree if path.is_dir() else shutil.copy2)(path, copy)
        shutil.copy2(manifest_path(path), manifest_path(copy))
        path = copy
    return SimpleNamespace(target=target, path=path, manifest=manifest_path(path), sha256=shvit_edge_sha(path),
                           size_bytes=size_of(path))


def _check_manifest(artifact, source, target, resolution):
    manifest = read_manifest(artifact.manifest)
    assert manifest.target == target and manifest.variant == source.variant
    assert manifest.resolution == resolution
    assert manifest.artifact.sha256 == artifact.sha256 == shvit_edge_sha(artifact.path)
    assert manifest.artifact.size_bytes == artifact.size_bytes
    assert manifest.checkpoint == source.checkpoint
    assert manifest.versions["torch"] and manifest.export_seconds > 0
    return manifest


def shvit_edge_sha(path):
    from shvit_edge.atomic import sha256_of

    return sha256_of(path)


def check_coreml_structure(path, resolution, num_classes=1000):
    """What can be checked of a Core ML package off Apple hardware: its spec."""
    from shvit_edge.backends.coreml import describe

    info = describe(path)
    (image,) = info["inputs"]
    assert (image["name"], image["type"], image["height"], image["width"]) == ("image", "imageType", *resolution)
    assert len(info["classifier"]["labels"]) == num_classes
    assert info["minimum_deployment_target"] == "iOS16"
    return info


@pytest.mark.parametrize("target,resolution", [(t, r) for t in TARGETS for r in ("224", "320x192")]
                         + [("executorch", "288")])  # one more square size, on the target that lowers per shape
def test_s1_fixture_exports_and_matches(s1_source, reference_io, images_dir, tmp_path, request, target, resolution):
    if (target, resolution) in SHARED:  # the same export as a session fixture's: a private copy of it
        artifact = _shared_artifact(request, target, resolution, tmp_path)
    else:
        artifact = _export_one(s1_source, target, tmp_path, resolution=resolution)
    res = parse_resolution(resolution)
    manifest = _check_manifest(artifact, s1_source, target, res)
    assert manifest.inputs[0].name == "image"
    assert_verifies(artifact.path, images_dir)
    if target == "coreml":
        check_coreml_structure(artifact.path, res)
        return
    assert manifest.outputs[0].name == "logits"
    assert manifest.inputs[0].shape == (1, 3, *res)
    assert_matches(s1_source.model, artifact.path, _inputs(res, reference_io))
    if target == "executorch":
        delegation = manifest.details["delegation"]
        assert delegation["partitions"] == 1 and delegation["backends"] == {"XnnpackBackend": 1}
        assert delegation["ops_outside"] == {}, delegation


def test_model_source_travels_to_a_worker_as_its_weights(s1_source):
    copied = pickle.loads(pickle.dumps(s1_source))
    assert copied.model is not s1_source.model and copied._programs == {} and copied._deploy == {}
    assert (copied.variant, copied.checkpoint, copied.labels) == (s1_source.variant, s1_source.checkpoint,
                                                                  s1_source.labels)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(copied.model(x), s1_source.model(x))


def test_parallel_export_matches_the_model(s1_source, reference_io, images_dir, tmp_path):
    """Two lanes: this process takes the longest target (TFLite), a spawned worker the other, from the same
    weights; results come back in the order asked for."""
    messages = []
    report = export(s1_source, resolve_targets("onnx,tflite"), ExportOptions(resolution=(224, 224)), tmp_path,
                    progress=messages.append, jobs=2)
    assert not report.failures, report.failures
    assert [a.target for a in report.artifacts] == ["onnx", "tflite"]
    assert any("in 2 processes" in m for m in messages), messages
    for artifact in report.artifacts:
        _check_manifest(artifact, s1_source, artifact.target, (224, 224))
        assert_matches(s1_source.model, artifact.path, _inputs((224, 224), reference_io))
        assert_verifies(artifact.path, images_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        n for a in report.artifacts for n in (a.path.name, a.manifest.name))


def test_a_script_without_the_main_guard_gets_its_dead_worker_reported_not_a_hang(tmp_path):
    """A script calling ``export(jobs=2)`` at top level: each spawned worker re-runs it on import and dies trying
    to spawn in turn. The parent used to block for good writing the model's weights into the dead worker's spawn
    pipe; now its own target is exported and the worker's fails by name."""
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text(
        "from shvit_edge.export import ExportOptions, export, load_source, resolve_targets\n"
        "source = load_source(variant='shvit_s1', checkpoint=None)\n"
        f"report = export(source, resolve_targets('onnx,tflite'), ExportOptions(resolution=(64, 64)), "
        f"{str(tmp_path / 'out')!r} + '-' + __name__, jobs=2)\n"
        "print('FAILED', [(f.target, f.message) for f in report.failures])\n"
        "print('WROTE', [a.target for a in report.artifacts])\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "WROTE ['tflite']" in done.stdout, done.stdout  # this process's lane: the longest target
    assert "FAILED [('onnx', 'RuntimeError: the export process died" in done.stdout, done.stdout
    assert "bootstrapping phase" in done.stderr  # the worker's own error, which names the fix


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("variant", ["shvit_s2", "shvit_s3", "shvit_s4"])
def test_larger_variants_export_and_match(randomized_checkpoints, images_dir, tmp_path, target, variant):
    source = load_source(variant=variant, checkpoint=str(randomized_checkpoints[variant]))
    artifact = _export_one(source, target, tmp_path)
    res = (VARIANTS[variant].resolution,) * 2
    manifest = _check_manifest(artifact, source, target, res)
    assert_verifies(artifact.path, images_dir)
    if target == "coreml":
        check_coreml_structure(artifact.path, res)
        return
    x = torch.randn(2, 3, *res, generator=torch.Generator().manual_seed(7))
    assert_matches(source.model, artifact.path, x)
    if target == "executorch":
        assert manifest.details["delegation"]["partitions"] == 1
        assert manifest.details["delegation"]["ops_outside"] == {}


def test_tflite_nhwc_layout(s1_source, reference_io, images_dir, tmp_path):
    artifact = _export_one(s1_source, "tflite", tmp_path, layout="nhwc")
    assert_verifies(artifact.path, images_dir)
    manifest = read_manifest(artifact.manifest)
    assert manifest.inputs[0].layout == "NHWC" and manifest.inputs[0].shape == (1, 224, 224, 3)
    assert_matches(s1_source.model, artifact.path, _inputs((224, 224), reference_io))


@pytest.mark.parametrize("target", RUNNABLE)
def test_batch_16(s1_source, images_dir, tmp_path, target):
    artifact = _export_one(s1_source, target, tmp_path, batch=16)
    assert_verifies(artifact.path, images_dir, samples=12)  # 17 inputs: one full batch, one padded
    assert read_manifest(artifact.manifest).inputs[0].shape == (16, 3, 224, 224)
    assert_matches(s1_source.model, artifact.path, _inputs((224, 224), None, batch=16))


def test_onnx_dynamic_batch(s1_source, images_dir, tmp_path):
    artifact = _export_one(s1_source, "onnx", tmp_path, dynamic_batch=True)
    assert_verifies(artifact.path, images_dir)
    manifest = read_manifest(artifact.manifest)
    assert manifest.inputs[0].dynamic_axes == (0,)
    runner = get_backend("onnx").load(artifact.path, manifest)
    x = torch.randn(5, 3, 224, 224)
    with torch.no_grad():
        ref = s1_source.model(x).numpy()
    assert compare(runner(x.numpy()), ref).cosine >= COSINE


@pytest.mark.parametrize("resolution", ["224", "320x192"])
def test_coreml_image_classifier_package(s1_source, request, resolution):
    """The default Core ML export of test_s1_fixture_exports_and_matches, shared (read-only: nothing writes)."""
    from shvit_edge.backends.coreml import describe

    artifact = _shared_artifact(request, "coreml", resolution)
    h, w = parse_resolution(resolution)
    manifest = _check_manifest(artifact, s1_source, "coreml", (h, w))
    assert artifact.path.suffix == ".mlpackage" and artifact.path.is_dir()
    info = describe(artifact.path)
    assert info["minimum_deployment_target"] == "iOS16"
    (image,) = info["inputs"]
    assert (image["name"], image["type"], image["width"], image["height"], image["color"]) == \
        ("image", "imageType", w, h, "RGB")
    classifier = info["classifier"]
    assert classifier["predicted_feature"] == "classLabel" and classifier["probabilities"] == "classLabel_probs"
    assert len(classifier["labels"]) == 1000 and classifier["labels"][:2] == ["tench", "goldfish"]
    meta = info["metadata"]
    assert meta["author"] == "shvit-edge" and "shvit_s1" in meta["short_description"]
    assert meta["user_defined"]["shvit_edge.variant"] == "shvit_s1"
    assert json.loads(meta["user_defined"]["shvit_edge.preprocessing"])["mean"] == list(s1_source.mean)
    assert info["weight_dtypes"] == {"FLOAT16": info["weight_dtypes"]["FLOAT16"]}  # fp16 by default
    assert manifest.precision == "fp16" and manifest.preprocessing.applied == "in-model"
    assert manifest.inputs[0].kind == "image"


def test_coreml_tensor_io_fp32(s1_source, images_dir, tmp_path):
    from shvit_edge.backends.coreml import describe

    artifact = _export_one(s1_source, "coreml", tmp_path, coreml_io="tensor", precision="fp32")
    assert_verifies(artifact.path, images_dir)
    info = describe(artifact.path)
    assert info["inputs"] == [{"name": "image", "type": "multiArrayType", "shape": [1, 3, 224, 224],
                               "dtype": "FLOAT32"}]
    assert info["outputs"] == [{"name": "logits", "type": "multiArrayType"}]
    assert info["classifier"] is None and set(info["weight_dtypes"]) == {"FLOAT32"}


def test_executorch_coreml_delegate(s1_source, images_dir, tmp_path):
    from executorch.exir._serialize._program import deserialize_pte_binary

    artifact = _export_one(s1_source, "executorch", tmp_path, delegate="coreml")
    (result,) = assert_verifies(artifact.path, images_dir, runs_here=False)
    assert "CoreMLBackend" in result.reason
    manifest = read_manifest(artifact.manifest)
    assert manifest.details["delegation"]["backends"] == {"CoreMLBackend": 1}
    program = deserialize_pte_binary(artifact.path.read_bytes()).program
    assert [d.id for plan in program.execution_plan for d in plan.delegates] == ["CoreMLBackend"]


def test_cli_export_all_targets_json(untrained_s1_64_export, official_pth, tmp_path):
    """``export --target all ... --json`` (the command line run of conftest's ``untrained_s1_64_export``, whose
    artifacts the other tests use)."""
    import shutil

    run = untrained_s1_64_export
    assert run.exit_code == 0, run.output
    doc = json.loads(run.stdout)
    assert sorted(a["target"] for a in doc["artifacts"]) == ["coreml", "executorch", "onnx", "tflite"]
    for a in doc["artifacts"]:
        assert set(a) == {"target", "profile", "path", "manifest", "sha256", "size_bytes", "seconds"}
        assert Path(a["path"]).exists() and Path(a["manifest"]).exists()
        assert Path(a["path"]).parent == run.out
        assert read_manifest(Path(a["manifest"])).artifact.sha256 == a["sha256"] == shvit_edge_sha(a["path"])
    # a second run does not overwrite without --force, and says so (into a copy: the run's folder is shared)
    out = Path(shutil.copytree(run.out, tmp_path / "out", symlinks=True))
    again = CliRunner().invoke(cli, ["export", "--target", "onnx", "--checkpoint", str(official_pth),
                                     "--resolution", "64", "--out", str(out)])
    assert again.exit_code == 2 and "--force" in again.output


def test_untrained_export_says_so_and_records_the_seed(tmp_path):
    result = CliRunner().invoke(cli, ["export", "--target", "onnx", "--variant", "shvit_s1", "--seed", "3",
                                      "--resolution", "64", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert "UNTRAINED" in result.stderr
    manifest = read_manifest(Path(json.loads(result.stdout)["artifacts"][0]["manifest"]))
    assert manifest.untrained and manifest.checkpoint.path == "untrained" and manifest.checkpoint.seed == 3
    from shvit_edge.models.build import untrained_model

    rebuilt = untrained_model("shvit_s1", seed=3)
    x = torch.randn(1, 3, 64, 64)
    runner = get_backend("onnx").load(Path(json.loads(result.stdout)["artifacts"][0]["path"]))
    with torch.no_grad():
        assert compare(runner(x.numpy()), rebuilt(x).numpy()).cosine >= COSINE


@pytest.mark.parametrize("args,message", [
    (["--target", "onnx", "--variant", "shvit_s1", "--resolution", "100"], "multiple of 16"),
    (["--target", "onnx", "--variant", "shvit_s1", "--resolution", "48"], "multiple of 16 from 64"),
    (["--target", "onnx", "--variant", "shvit_s1", "--resolution", "224x"], "resolution"),
    (["--target", "android-v9", "--variant", "shvit_s1"], "unknown target"),
    (["--target", "onnx"], "--variant, --checkpoint or both"),
    (["--target", "onnx", "--variant", "shvit_s1", "--batch", "0"], "batch"),
    (["--target", "onnx", "--variant", "shvit_s1", "--layout", "nhwc"], "tflite target only"),
    (["--target", "coreml", "--variant", "shvit_s1", "--batch", "4"], "--coreml-io tensor"),
    (["--target", "onnx", "--variant", "shvit_s1", "--precision", "fp16"], "does not offer fp16"),
    (["--target", "onnx", "--variant", "shvit_s1", "--labels", "/nonexistent/labels.txt"], "labels"),
])
def test_bad_export_arguments_are_usage_errors(tmp_path, args, message):
    result = CliRunner().invoke(cli, ["export", *args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_labels_file_must_match_the_class_count(official_pth, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    result = CliRunner().invoke(cli, ["export", "--target", "coreml", "--checkpoint", str(official_pth),
                                      "--labels", str(labels), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "2 labels for a model with 1000 classes" in result.output


def test_missing_extra_names_the_pip_command(monkeypatch, tmp_path):
    from shvit_edge.backends.base import get_backend

    monkeypatch.setattr(type(get_backend("tflite")), "is_available", lambda self: False)
    result = CliRunner().invoke(cli, ["export", "--target", "tflite", "--variant", "shvit_s1",
                                      "--resolution", "64", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "pip install 'shvit-edge[tflite]'" in result.output
    assert list(tmp_path.iterdir()) == []
