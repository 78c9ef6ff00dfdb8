"""Quantized TFLite export (ai-edge-quantizer on the converted model) and what verify says it cost against the
fp32 PyTorch model: S1 from ``shvit_s1_calibrated`` (it reacts to the photos) at 224, judged on the five fixture
images. The op-mapping check runs on the fp32 artifact (names only: it reads them with the official fixture's
deploy model)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from shvit_edge.backends.tflite import _named, _ops_by_layer
from shvit_edge.cli import cli
from shvit_edge.export import ExportOptions, export, resolve_targets
from shvit_edge.manifest import read_manifest
from shvit_edge.quantize import quantizable_layers
from shvit_edge.verify import VerifyOptions, verify
from test_quantize import SAMPLES, assert_int8_verifies, expected_quantization


@pytest.fixture(scope="session")
def fp32_tflite(s1_fp32):
    return s1_fp32("tflite")


def _verify(artifact, images_dir):
    (result,) = verify([artifact.path], VerifyOptions(images=str(images_dir), samples=0))
    assert result.status == "pass", result
    assert result.runtime.startswith("ai-edge-litert")
    return result


def test_fp16_halves_the_weights_and_passes_the_fp16_tolerances(calibrated_source, fp32_tflite, images_dir,
                                                                tmp_path):
    options = ExportOptions(resolution=(224, 224), quantize="fp16")
    (artifact,) = export(calibrated_source, resolve_targets("tflite"), options, tmp_path).artifacts
    assert artifact.path.name == "shvit_s1_224x224_fp16.tflite"
    manifest = read_manifest(artifact.manifest)
    assert manifest.quantization == expected_quantization("tflite", "fp16")
    assert manifest.inputs[0].dtype == "float32" and manifest.outputs[0].dtype == "float32"
    dtypes = manifest.details["tensor_dtypes"]
    # every conv and linear weight is fp16 (dequantized at load), the compute stays float
    assert dtypes["weights"].get("float16", 0) >= len(quantizable_layers(calibrated_source.deploy_model())), dtypes
    assert set(dtypes["activations"]) == {"float32"}, dtypes
    assert manifest.details["ops"].get("DEQUANTIZE", 0) > 0
    assert artifact.size_bytes <= 0.55 * fp32_tflite.size_bytes, (artifact.size_bytes, fp32_tflite.size_bytes)
    result = _verify(artifact, images_dir)
    assert result.tolerances["class"] == "fp16" and result.tolerances["cosine"] == 0.999
    metrics = result.metrics["logits"]
    assert metrics["cosine"] >= 0.999 and metrics["top1_agreement"] == 1.0, metrics
    assert metrics["max_abs"] > 1e-4, metrics  # fp32 is within ~1e-5: the weights really are fp16


def test_int8_dynamic_has_int8_weights_and_float_activations(calibrated_source, fp32_tflite, images_dir, tmp_path):
    options = ExportOptions(resolution=(224, 224), quantize="int8-dynamic")
    (artifact,) = export(calibrated_source, resolve_targets("tflite"), options, tmp_path).artifacts
    assert artifact.path.name == "shvit_s1_224x224_int8-dynamic.tflite"
    manifest = read_manifest(artifact.manifest)
    assert manifest.quantization == expected_quantization("tflite", "int8-dynamic")
    dtypes = manifest.details["tensor_dtypes"]
    assert dtypes["weights"].get("int8", 0) >= len(quantizable_layers(calibrated_source.deploy_model())), dtypes
    assert set(dtypes["activations"]) == {"float32"}, dtypes  # quantized on the fly by the kernels
    assert "QUANTIZE" not in manifest.details["ops"]
    assert artifact.size_bytes <= 0.35 * fp32_tflite.size_bytes, (artifact.size_bytes, fp32_tflite.size_bytes)
    assert_int8_verifies(artifact, images_dir, below_class_floor_db=20.0)  # measured 22.4 dB, max abs 1.98 > 1.0


def test_int8_is_full_integer_inside_float_io_and_passes_verify(calibrated_source, fp32_tflite, images_dir,
                                                                 tmp_path):
    options = ExportOptions(resolution=(224, 224), quantize="int8", calibration=str(images_dir),
                            calibration_samples=SAMPLES)
    (artifact,) = export(calibrated_source, resolve_targets("tflite"), options, tmp_path).artifacts
    assert artifact.path.name == "shvit_s1_224x224_int8.tflite"
    manifest = read_manifest(artifact.manifest)
    assert manifest.quantization == expected_quantization("tflite", "int8", images_dir, SAMPLES)
    # the same float contract as fp32: apps and verify feed the same tensors
    assert manifest.inputs[0].dtype == "float32" and manifest.outputs[0].dtype == "float32"
    dtypes = manifest.details["tensor_dtypes"]
    assert "float32" not in dtypes["weights"] and "float16" not in dtypes["weights"], dtypes
    # only the float input and output are float; the logits' fully-connected runs 16-bit activations
    assert dtypes["activations"]["float32"] == 2 and dtypes["activations"]["int16"] == 2, dtypes
    assert dtypes["activations"]["int8"] > 300, dtypes
    ops = manifest.details["ops"]
    assert ops["DEQUANTIZE"] == 1 and ops["QUANTIZE"] >= 1, ops
    assert artifact.size_bytes <= 0.35 * fp32_tflite.size_bytes, (artifact.size_bytes, fp32_tflite.size_bytes)
    assert_int8_verifies(artifact, images_dir, below_class_floor_db=15.0)  # measured 17.3 dB: README, int8_ladder.py


def test_every_layer_name_maps_to_exactly_one_op(s1_source, fp32_tflite):
    """--keep-float names (the deploy model's convs and linears) find their TFLite op through the module
    hierarchy litert-torch writes into the weight tensor's name: one op each, never the same op twice."""
    deploy = s1_source.deploy_model()
    layers = quantizable_layers(deploy)
    model = fp32_tflite.path.read_bytes()
    per_layer = _ops_by_layer(model, _named(deploy), deploy, tuple(layers))
    assert list(per_layer) == layers
    assert all(len(ops) == 1 for ops in per_layer.values()), {k: v for k, v in per_layer.items() if len(v) != 1}
    assert len({ops[0] for ops in per_layer.values()}) == len(layers)
    assert per_layer["head"][0][1] == "FULLY_CONNECTED"
    assert per_layer["stages.0.blocks.0.conv"][0][1] == "DEPTHWISE_CONV_2D"
    assert per_layer["stages.1.blocks.0.mixer.m.qkv"][0][1] == "CONV_2D"


def test_int8_nhwc_batch2_with_keep_float(calibrated_source, images_dir, tmp_path):
    keep = ("patch_embed.0", "stages.1.blocks.0.mixer.m.qkv", "head")
    options = ExportOptions.create(resolution=(224, 224), layout="nhwc", batch=2, quantize="int8",
                            calibration=str(images_dir), keep_float=keep, calibration_samples=SAMPLES)
    (artifact,) = export(calibrated_source, resolve_targets("tflite"), options, tmp_path).artifacts
    manifest = read_manifest(artifact.manifest)
    assert manifest.quantization == expected_quantization("tflite", "int8", images_dir, SAMPLES,
                                                          keep_float=keep)
    assert manifest.inputs[0].shape == (2, 224, 224, 3) and manifest.inputs[0].dtype == "float32"
    dtypes = manifest.details["tensor_dtypes"]
    # the three kept layers' weights and biases stay float32, all others int8
    assert dtypes["weights"]["float32"] == 2 * len(keep), dtypes
    assert dtypes["weights"]["int8"] >= len(quantizable_layers(calibrated_source.deploy_model())) - len(keep), dtypes
    assert "int16" not in dtypes["activations"], dtypes  # the head is float, not the 16-bit fully-connected
    assert_int8_verifies(artifact, images_dir, below_class_floor_db=15.0)


@pytest.mark.parametrize("args,message", [
    (["--quantize", "int8"], "give --calibration DIR"),
    (["--quantize", "fp16", "--calibration", "random"], "--calibration applies"),
    (["--quantize", "int8-weights"], "offers: fp16, int8-dynamic, int8"),
])
def test_bad_tflite_quantize_arguments_are_usage_errors(tmp_path, args, message):
    result = CliRunner().invoke(cli, ["export", "--target", "tflite", *args, "--variant", "shvit_s1",
                                      "--resolution", "64", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
