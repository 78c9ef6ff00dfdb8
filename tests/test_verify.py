"""Verify: artifacts run in their runtimes against the PyTorch model; tampering and bad input are caught."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import save_file

import shvit_edge
from shvit_edge.cli import cli
from shvit_edge.export import ExportOptions, export, load_source, resolve_targets
from shvit_edge.images import list_images, load_pixels, normalize
from shvit_edge.manifest import Preprocessing, read_manifest
from shvit_edge.targets import resolve_target

from conftest import fixture_path, randomize

RESULT_KEYS = {"artifact", "target", "runtime", "status", "metrics", "tolerances", "reason", "details"}


@pytest.fixture(scope="session")
def exported(calibrated_224):
    return calibrated_224


@pytest.fixture
def artifacts(exported, tmp_path):
    """A private copy (verify writes into the manifests)."""
    folder = tmp_path / "artifacts"
    shutil.copytree(exported, folder)
    return folder


def run(*args):
    return CliRunner().invoke(cli, ["verify", *map(str, args)])


def test_folder_of_artifacts_passes_and_reports_json(artifacts, images_dir):
    (artifacts / "notes.txt").write_text("not an artifact")
    result = run(artifacts, "--images", images_dir, "--samples", "3", "--json")
    assert result.exit_code == 0, result.output
    results = json.loads(result.stdout)["results"]
    assert {r["target"]: r["status"] for r in results} == {"coreml": "pass", "onnx": "pass", "tflite": "pass"}
    for r in results:
        assert set(r) == RESULT_KEYS
        assert Path(r["artifact"]).parent == artifacts
        profile = resolve_target(read_manifest(Path(r["artifact"] + ".json")).profile)
        precision = "fp16" if r["target"] == "coreml" else "fp32"
        assert r["tolerances"]["cosine"] == profile.tolerance(precision).cosine
        if r["target"] == "coreml":  # fp16 probabilities, in the coreml-sim interpreter off macOS
            metrics = r["metrics"]["classLabel_probs"]
            assert metrics["samples"] == 5 + 3 and metrics["cosine"] >= 0.999, metrics
            assert r["details"]["structure"]["image preprocessing"].startswith("RGB")
            assert r["details"]["fp16_headroom"]["overflowing"] == [] and "least fp16 headroom" in r["reason"]
        else:
            metrics = r["metrics"]["logits"]
            assert metrics["samples"] == 5 + 3 and metrics["cosine"] >= 0.99999
            assert metrics["sqnr_db"] > 60
        assert metrics["top1_agreement"] == 1.0
        assert set(metrics) >= {"max_abs", "mean_abs", "cosine", "sqnr_db", "top1_agreement", "top5_overlap"}
        verification = read_manifest(Path(r["artifact"] + ".json")).verification
        assert verification["results"][0]["status"] == r["status"]
        assert verification["inputs"] == {"images": [p.name for p in list_images(images_dir)], "random": 3,
                                          "seed": 0}


def test_a_checkpoint_with_other_weights_fails(artifacts, images_dir, tmp_path):
    other = tmp_path / "other.safetensors"
    save_file(randomize(shvit_edge.create_model("shvit_s1"), seed=99).state_dict(), str(other))
    result = run(artifacts / "shvit_s1_224x224.onnx", "--checkpoint", other, "--images", images_dir, "--json")
    assert result.exit_code == 1, result.output
    (r,) = json.loads(result.stdout)["results"]
    assert r["status"] == "fail" and "cosine" in r["reason"] and "sha256 differs" in r["reason"]


def test_the_same_weights_in_another_layout_pass(artifacts, images_dir):
    timm_layout = fixture_path("shvit_s1_calibrated.timm.safetensors")  # the exported weights, in timm's layout
    result = run(artifacts / "shvit_s1_224x224.tflite", "--checkpoint", timm_layout, "--images", images_dir,
                 "--json")
    assert result.exit_code == 0, result.output
    (r,) = json.loads(result.stdout)["results"]
    assert r["status"] == "pass" and "sha256 differs" in r["reason"]


def test_a_flipped_byte_fails_on_the_checksum_before_running(artifacts, images_dir):
    path = artifacts / "shvit_s1_224x224.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    result = run(path, "--images", images_dir, "--json")
    assert result.exit_code == 1, result.output
    (r,) = json.loads(result.stdout)["results"]
    assert r["status"] == "fail" and r["runtime"] == "none" and "sha256 mismatch" in r["reason"]
    assert read_manifest(path.with_name(path.name + ".json")).verification["results"][0]["status"] == "fail"


@pytest.mark.parametrize("name", ["shvit_s1_224x224.onnx", "shvit_s1_224x224.tflite",
                                  "shvit_s1_224x224_fp16.mlpackage"])
def test_a_manifest_that_lies_about_the_input_shape_fails(artifacts, name):
    manifest = artifacts / f"{name}.json"
    doc = json.loads(manifest.read_text())
    doc["resolution"] = [256, 256]
    doc["inputs"][0]["shape"] = [1, 3, 256, 256]
    manifest.write_text(json.dumps(doc))
    result = run(artifacts / name, "--samples", "2", "--json")
    assert result.exit_code == 1, result.output
    (r,) = json.loads(result.stdout)["results"]
    assert r["status"] == "fail" and "manifest says" in r["reason"] and "224" in r["reason"], r


def test_tolerance_flags_override_the_profile(artifacts):
    result = run(artifacts / "shvit_s1_224x224.onnx", "--samples", "2", "--min-cosine", "1", "--max-abs", "1e-12",
                 "--json")
    assert result.exit_code == 1, result.output
    (r,) = json.loads(result.stdout)["results"]
    assert r["tolerances"]["cosine"] == 1.0 and r["tolerances"]["max_abs"] == 1e-12 and r["status"] == "fail"
    assert "cosine" in r["reason"] and "max abs" in r["reason"]


def test_images_only(artifacts, images_dir):
    result = run(artifacts / "shvit_s1_224x224.onnx", "--images", images_dir, "--samples", "0", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["results"][0]["metrics"]["logits"]["samples"] == 5


def test_an_untrained_artifact_is_checked_against_its_seed(tmp_path):
    source = load_source(variant="shvit_s1", checkpoint=None, seed=5)
    export(source, resolve_targets("onnx"), ExportOptions(resolution=(64, 64)), tmp_path)
    result = run(tmp_path, "--samples", "4", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["results"][0]["status"] == "pass"


def _bad_image_folder(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "photo.jpg").write_bytes(b"this is not a JPEG")
    return folder


def _empty_folder(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "readme.txt").write_text("no images here")
    return folder


def _other_variant(tmp_path):
    path = tmp_path / "s2.safetensors"
    save_file(shvit_edge.create_model("shvit_s2").state_dict(), str(path))
    return path


def _lost_checkpoint(artifacts):
    manifest = artifacts / "shvit_s1_224x224.onnx.json"
    doc = json.loads(manifest.read_text())
    doc["checkpoint"]["path"] = "/nonexistent/shvit_s1.pth"
    manifest.write_text(json.dumps(doc))
    return []


@pytest.mark.parametrize("make,message", [
    (lambda a, t: ["--images", _empty_folder(t)], "no JPEG or PNG images"),
    (lambda a, t: ["--images", _bad_image_folder(t)], "cannot read the image"),
    (lambda a, t: ["--images", t / "missing"], "no such folder"),
    (lambda a, t: ["--samples", "0"], "nothing to compare on"),
    (lambda a, t: ["--samples", "-1"], "--samples"),
    (lambda a, t: ["--checkpoint", t / "missing.pth"], "missing.pth"),
    (lambda a, t: ["--checkpoint", _other_variant(t)], "the reference is shvit_s2"),
    (lambda a, t: _lost_checkpoint(a), "pass --checkpoint"),
])
def test_bad_input_is_a_usage_error(artifacts, tmp_path, make, message):
    result = run(artifacts / "shvit_s1_224x224.onnx", *make(artifacts, tmp_path))
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_paths_that_are_not_artifacts_are_usage_errors(tmp_path):
    stray = tmp_path / "model.onnx"
    stray.write_bytes(b"onnx?")
    result = run(stray)
    assert result.exit_code == 2 and "not an artifact" in result.output
    result = run(tmp_path / "nothing-here")
    assert result.exit_code == 2 and "no such file" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run(empty)
    assert result.exit_code == 2 and "no artifacts" in result.output


@pytest.mark.parametrize("size", [(500, 300), (300, 500)])
def test_images_are_resized_to_cover_and_centre_cropped(tmp_path, size):
    """Landscape and portrait photos both fill a square and a non-square input; a band in the middle of the
    photo lands in the middle of the crop."""
    w, h = size
    pixels = np.zeros((h, w, 3), dtype=np.uint8)
    pixels[h // 2 - 10:h // 2 + 10, :, 0] = 255  # a red horizontal band through the centre
    Image.fromarray(pixels).save(tmp_path / "band.png")
    pre = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), scale=1 / 255, resize=73)
    for resolution in ((64, 64), (96, 48), (48, 96)):
        out = load_pixels([tmp_path / "band.png"], resolution, pre)
        assert out.shape == (1, 3, *resolution) and out.dtype == np.uint8
        rh = resolution[0]
        assert out[0, 0, rh // 2].min() > 200 and out[0, 0, 0].max() < 50
    x = normalize(out, pre)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, (out / 255.0 - 0.5) / 0.25, atol=1e-6)
