"""Quantized export (ONNX so far) and what verify says it cost against the fp32 PyTorch model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from shvit_edge.cli import cli
from shvit_edge.export import ExportOptions, export, load_source, resolve_targets
from shvit_edge.manifest import Quantization, read_manifest
from shvit_edge.verify import VerifyOptions, verify


@pytest.fixture(scope="session")
def fp32_onnx_size(official_pth, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fp32")
    source = load_source(variant=None, checkpoint=str(official_pth))
    (artifact,) = export(source, resolve_targets("onnx"), ExportOptions(resolution=(224, 224)), folder).artifacts
    return artifact.size_bytes


@pytest.mark.parametrize("mode,calibrated", [("int8-dynamic", False), ("int8", True)])
def test_onnx_int8_exports_and_passes_verify_on_the_images(official_pth, images_dir, fp32_onnx_size, tmp_path,
                                                           mode, calibrated):
    source = load_source(variant=None, checkpoint=str(official_pth))
    options = ExportOptions(resolution=(224, 224), quantize=mode,
                            calibration=str(images_dir) if calibrated else None)
    (artifact,) = export(source, resolve_targets("onnx"), options, tmp_path).artifacts
    assert artifact.path.name == f"shvit_s1_224x224_{mode}.onnx"
    manifest = read_manifest(artifact.manifest)
    expected = Quantization(mode, str(images_dir), 5) if calibrated else Quantization(mode)
    assert manifest.quantization == expected
    assert artifact.size_bytes <= 0.35 * fp32_onnx_size, (artifact.size_bytes, fp32_onnx_size)
    ops = manifest.details["ops"]
    assert ops.get("QuantizeLinear" if calibrated else "DynamicQuantizeLinear", 0) > 0, ops
    (result,) = verify([artifact.path], VerifyOptions(images=str(images_dir), samples=0))
    assert result.status == "pass", result
    assert result.tolerances["class"] == "int8" and result.tolerances["sqnr_db"] == 20.0
    metrics = result.metrics["logits"]
    assert metrics["cosine"] >= 0.99 and metrics["sqnr_db"] >= 20.0, metrics
    assert metrics["cosine"] < 0.99999  # really quantized: fp32 would be within 1e-5


def test_random_calibration_warns(tmp_path):
    result = CliRunner().invoke(cli, ["export", "--target", "onnx", "--variant", "shvit_s1", "--resolution", "64",
                                      "--quantize", "int8", "--calibration", "random", "--calibration-samples", "4",
                                      "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert "calibrating on random inputs" in result.stderr
    manifest = read_manifest(Path(json.loads(result.stdout)["artifacts"][0]["manifest"]))
    assert manifest.quantization == Quantization("int8", "random", 4)


@pytest.mark.parametrize("args,message", [
    (["--target", "tflite", "--quantize", "int8", "--calibration", "random"], "offers: none yet"),
    (["--target", "onnx", "--quantize", "fp16"], "offers: int8, int8-dynamic"),
    (["--target", "onnx", "--quantize", "int8"], "give --calibration DIR"),
    (["--target", "onnx", "--quantize", "int8-dynamic", "--calibration", "random"], "--calibration applies"),
    (["--target", "onnx", "--quantize", "int8", "--calibration", "random", "--calibration-samples", "0"],
     "--calibration-samples"),
])
def test_bad_quantize_arguments_are_usage_errors(tmp_path, args, message):
    result = CliRunner().invoke(cli, ["export", *args, "--variant", "shvit_s1", "--resolution", "64",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_an_empty_calibration_folder_is_an_input_error(tmp_path):
    folder = tmp_path / "no-images"
    folder.mkdir()
    result = CliRunner().invoke(cli, ["export", "--target", "onnx", "--variant", "shvit_s1", "--resolution", "64",
                                      "--quantize", "int8", "--calibration", str(folder), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert "--calibration" in result.output and "no JPEG or PNG images" in result.output
    assert not (tmp_path / "o").exists()  # found before anything was converted or written
