"""Target profiles are validated data; manifests read back strictly."""

from __future__ import annotations

import dataclasses
import json

import pytest

from shvit_edge.errors import InputError, UsageError
from shvit_edge.export import resolve_targets
from shvit_edge.manifest import (ArtifactRef, CheckpointRef, Manifest, Preprocessing, TensorSpec, read_manifest)
from shvit_edge.targets import available_profiles, default_profiles, load_profile, resolve_target

from conftest import ROOT


def test_every_shipped_profile_loads_and_backends_map_to_them():
    profiles = available_profiles()
    assert set(default_profiles().values()) <= set(profiles)
    for name, path in profiles.items():
        profile = load_profile(path)
        assert profile.name == name
        for precision in profile.export.precisions:
            assert profile.tolerance(precision).cosine > 0.9
    assert resolve_target("coreml").export.minimum_deployment_target == "iOS16"
    assert resolve_target("coreml").export.precision == "fp16"
    assert [p.backend for p in resolve_targets("all")] == ["coreml", "executorch", "tflite", "onnx"]


def _write(tmp_path, text):
    path = tmp_path / "my-phone.toml"
    path.write_text(text)
    return path


BASE = (ROOT / "targets" / "android-arm64-tflite.toml").read_text()


def test_a_users_profile_by_path(tmp_path):
    path = _write(tmp_path, BASE.replace('name = "android-arm64-tflite"', 'name = "pixel-8"'))
    profile = resolve_target(str(path))
    assert profile.name == "pixel-8" and profile.backend == "tflite" and profile.source == str(path)


@pytest.mark.parametrize("edit,message", [
    (lambda t: t + "\nfrobnicate = 1\n", "unknown key 'frobnicate'"),
    (lambda t: t.replace("[harness]", "[harness]\nwarmups = 3"), "unknown key 'warmups' in [harness]"),
    (lambda t: t.replace("iterations = 100", 'iterations = "many"'), "harness.iterations must be int"),
    (lambda t: t.replace('backend = "tflite"', 'backend = "tvm"'), "backend 'tvm'"),
    (lambda t: t.replace('name = "android-arm64-tflite"\n', ""), "missing key 'name'"),
    (lambda t: t.replace("[tolerances.fp16]", "[tolerances.fp8]"), "fp8"),
    (lambda t: t + "\n[tolerances.int4]\ncosine = 1\nmax_abs = 1\ntop1_agreement = 1\n", "int4"),
    (lambda t: t + "\n[oops\n", "not valid TOML"),
    (lambda t: t.replace('"fp16", "int8-dynamic", "int8"]', '"fp16", "int4"]'), "'int4' is not a tflite mode"),
    (lambda t: t.replace("[tolerances.fp16]", "[tolerances.palettize-4]"),
     "no [tolerances.fp16] for the quantization mode fp16"),
])
def test_bad_profiles_name_the_problem(tmp_path, edit, message):
    path = _write(tmp_path, edit(BASE))
    with pytest.raises(InputError) as err:
        load_profile(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_unknown_target_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="unknown target 'pixel'"):
        resolve_target("pixel")
    with pytest.raises(InputError, match="not found"):
        resolve_target(str(tmp_path / "missing.toml"))


def _manifest() -> Manifest:
    return Manifest(
        schema_version=1, shvit_edge_version="0.1.0", target="onnx", profile="host-onnx", variant="shvit_s1",
        resolution=(224, 224), batch=1, num_classes=1000, distillation=False,
        checkpoint=CheckpointRef(path="x.pth", sha256="ab" * 32, layout="official"),
        inputs=(TensorSpec("image", (1, 3, 224, 224), "float32", "NCHW"),),
        outputs=(TensorSpec("logits", (1, 1000), "float32", "NC"),),
        preprocessing=Preprocessing(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), scale=1 / 255,
                                    resize=256),
        precision="fp32", quantization=None, versions={"torch": "2.13.0"},
        artifact=ArtifactRef(file="a.onnx", sha256="cd" * 32, sha256_method="sha256 of the file's bytes",
                             size_bytes=10),
        export_seconds=1.5, details={"opset": 18})


def test_manifest_round_trips(tmp_path):
    manifest = _manifest()
    path = tmp_path / "a.onnx.json"
    path.write_text(manifest.to_json())
    assert read_manifest(path) == manifest


@pytest.mark.parametrize("edit,message", [
    (lambda d: d.update(extra=1), "unknown key 'extra'"),
    (lambda d: d.pop("variant"), "missing key 'variant'"),
    (lambda d: d["inputs"][0].update(shape="1x3"), "inputs[0].shape must be a list"),
    (lambda d: d.update(batch="one"), "batch must be int"),
    (lambda d: d.update(schema_version=99), "schema_version 99"),
])
def test_a_lying_or_broken_manifest_is_an_input_error(tmp_path, edit, message):
    data = json.loads(_manifest().to_json())
    edit(data)
    path = tmp_path / "a.onnx.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError) as err:
        read_manifest(path)
    assert message in str(err.value)


def test_manifests_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        _manifest().variant = "shvit_s2"
