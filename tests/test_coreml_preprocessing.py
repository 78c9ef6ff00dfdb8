"""Core ML's built-in normalization, checked off Apple hardware: the image input's scale and bias (sign and value)
and colour space against the manifest, and 1/std folded into the first conv against the reference model.

Each mutation a conversion could suffer is made for real (the converter is handed a flipped bias, or the model
without the fold) and verify must fail the package it makes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shvit_edge.backends import coreml
from shvit_edge.export import ExportOptions, ModelSource, export, resolve_targets
from shvit_edge.manifest import read_manifest
from shvit_edge.verify import VerifyOptions, verify

RESOLUTION = (64, 64)


def _export(source, folder):
    (artifact,) = export(source, resolve_targets("coreml"), ExportOptions(resolution=RESOLUTION), folder).artifacts
    return artifact


def _verify(artifact, images_dir):
    (result,) = verify([artifact.path], VerifyOptions(images=str(images_dir), samples=0))
    return result


@pytest.fixture(scope="module")
def good(calibrated_source, tmp_path_factory):
    return _export(calibrated_source, tmp_path_factory.mktemp("good"))


def test_the_program_normalizes_as_the_manifest_says(good, calibrated_source):
    found = coreml.image_preprocessing(good.path)
    pre = read_manifest(good.manifest).preprocessing
    assert pre.applied == "in-model" and found["color"] == "RGB" == pre.color
    # ImageNet's numbers written out here, not taken from the code under test
    assert found["scale"] == pytest.approx([1 / 255] * 3, rel=1e-6)
    assert found["bias"] == pytest.approx([-0.485, -0.456, -0.406], rel=1e-6)
    # the first conv is the model's first conv (BatchNorm folded, which test_models checks) divided by std
    conv = calibrated_source.model.patch_embed[0]
    bn_scale = conv.bn.weight / torch.sqrt(conv.bn.running_var + conv.bn.eps)
    expected = (conv.c.weight * bn_scale[:, None, None, None]).detach().numpy()
    expected = expected / np.asarray([0.229, 0.224, 0.225], np.float32)[None, :, None, None]
    weight = found["first_conv"]["weight"]
    assert weight.shape == expected.shape
    assert np.abs(weight - expected).max() <= 1e-3 * np.abs(expected).max()  # fp16 storage


def test_verify_checks_the_normalization_and_says_so(good, images_dir):
    result = _verify(good, images_dir)
    assert result.status == "pass", result
    facts = "; ".join(f"{k} {v}" for k, v in result.details["structure"].items())
    assert "image preprocessing RGB, pixel * 0.00392157 + [-0.485, -0.456, -0.406]" in facts
    assert "matching the reference model: first_conv.weight, first_conv.bias" in facts


def test_a_flipped_bias_fails_verify(calibrated_source, images_dir, tmp_path, monkeypatch):
    """The image input adds +mean instead of -mean: every colour shifted, and on the phone a confident wrong
    answer. Made by handing the converter the flipped bias."""
    import coremltools as ct

    image_type = ct.ImageType

    def flipped(**kwargs):
        return image_type(**{**kwargs, "bias": [-b for b in kwargs["bias"]]})

    monkeypatch.setattr(ct, "ImageType", flipped)
    artifact = _export(calibrated_source, tmp_path)
    monkeypatch.undo()
    result = _verify(artifact, images_dir)
    assert result.status == "fail", result
    assert "the image input's bias is [0.485, 0.456, 0.406]" in result.reason
    assert "needs [-0.485, -0.456, -0.406]" in result.reason


def test_a_missing_std_fold_fails_verify(calibrated_source, images_dir, tmp_path, monkeypatch):
    """The image input subtracts the mean but nothing divides by std: the package's first conv is the plain
    model's. Made by handing the converter the model without the fold."""
    deploy_model = ModelSource.deploy_model
    monkeypatch.setattr(ModelSource, "deploy_model",
                        lambda self, fold_std=False, layout="nchw": deploy_model(self, False, layout))
    artifact = _export(calibrated_source, tmp_path)
    monkeypatch.undo()
    result = _verify(artifact, images_dir)
    assert result.status == "fail", result
    assert "the first conv's weights are not the reference's divided by the manifest's std" in result.reason


def test_a_manifest_that_disagrees_with_the_package_fails(good, images_dir, tmp_path):
    """The same check from the other side: a manifest claiming another mean or colour space (as a hand-edited
    or mismatched manifest would) no longer matches what the program computes. (A manifest colour other than RGB
    is refused when the manifest is read: test_readers.)"""
    import dataclasses
    import json
    import shutil

    from shvit_edge.manifest import manifest_path

    for change, message in ((dict(mean=(0.5, 0.5, 0.5)), "mean 0.5 needs -0.5"),
                            (dict(scale=1.0), "scales pixels by 0.00392157, the manifest says 1")):
        folder = tmp_path / json.dumps(change).translate(str.maketrans("", "", '{}":,. ()'))
        folder.mkdir()
        copy = folder / good.path.name
        shutil.copytree(good.path, copy)
        manifest = read_manifest(good.manifest)
        changed = dataclasses.replace(manifest, preprocessing=dataclasses.replace(manifest.preprocessing, **change))
        manifest_path(copy).write_text(changed.to_json(), encoding="utf-8")
        (result,) = verify([copy], VerifyOptions(images=str(images_dir), samples=0))
        assert result.status == "fail", (change, result)
        assert message in result.reason, (change, result.reason)
