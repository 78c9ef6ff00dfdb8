"""The coreml-sim interpreter on the toolkit's own Core ML programs: parity with PyTorch at each precision, I/O
form and resolution, and three deliberately broken programs caught (wrong channel order, normalization dropped,
an fp16 overflow). Single ops are tested against PyTorch in test_coreml_sim_ops.py.

Parity is judged on ``shvit_s1_calibrated`` (it reacts to its input: conftest.assert_reacts), on the five
fixture photos preprocessed by this project's image code."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shvit_edge.backends.coreml.sim import Headroom, Program, SimOptions, to_color_space
from shvit_edge.export import ExportOptions, export, load_source, resolve_targets
from shvit_edge.images import list_images, load_pixels, normalize
from shvit_edge.manifest import read_manifest
from shvit_edge.parity.metrics import compare
from shvit_edge.verify import VerifyOptions, verify

from conftest import built_once

pytestmark = pytest.mark.extras("coreml")


def _export(source, folder, resolution, **options):
    report = export(source, resolve_targets("coreml"), ExportOptions.create(resolution=resolution, **options),
                    folder, jobs=1)
    assert not report.failures, report.failures
    (artifact,) = report.artifacts
    return artifact.path


def _sim_against_torch(path, source, images_dir, options: SimOptions | None = None, headroom=None):
    """The package's outputs in the interpreter and the PyTorch model's on the photos, as the manifest says to
    preprocess them (probabilities for a classifier, logits for a tensor output)."""
    manifest = read_manifest(path.with_name(path.name + ".json"))
    pixels = load_pixels(list_images(str(images_dir)), manifest.resolution, manifest.preprocessing)
    x = normalize(pixels, manifest.preprocessing)
    with torch.no_grad():
        reference = source.model(torch.from_numpy(x)).numpy()
    program = Program.load(path)
    (spec,) = program.inputs
    outs = []
    for i in range(len(pixels)):
        feed = to_color_space(pixels[i:i + 1], spec.color_space) if spec.color_space else x[i:i + 1]
        result = program.run({spec.name: feed}, options, headroom)
        outs.append(np.asarray(result[program.outputs[-1]], np.float32).reshape(1, -1))
    if spec.color_space:  # a classifier: its softmax probabilities
        reference = torch.softmax(torch.from_numpy(reference), -1).numpy()
    return compare(np.concatenate(outs), reference)


@pytest.fixture(scope="module")
def calibrated_fresh(calibrated_pth):
    """A private copy of the calibrated source (tests here change its weights)."""
    return lambda: load_source(variant=None, checkpoint=str(calibrated_pth))


# (precision, I/O, resolution): fp32 and fp16, image and tensor, square and not
S1_PROGRAMS = [("fp32", "image", (224, 224)), ("fp16", "image", (224, 224)), ("fp16", "tensor", (288, 288)),
               ("fp16", "image", (320, 192)), ("fp32", "tensor", (320, 192))]


@pytest.mark.parametrize("precision,io,resolution", S1_PROGRAMS)
def test_s1_programs_match_pytorch_in_the_interpreter(calibrated_source, images_dir, tmp_path_factory, request,
                                                       precision, io, resolution):
    if (precision, io, resolution) == ("fp16", "image", (224, 224)):  # the export defaults: shared with verify's
        folder = request.getfixturevalue("calibrated_224")
    elif (precision, io, resolution) == ("fp16", "image", (320, 192)):  # the defaults too: shared with test_export
        folder = request.getfixturevalue("calibrated_coreml_320x192")
    else:
        name = f"sim_s1_{precision}_{io}_{resolution[0]}x{resolution[1]}"
        folder = built_once(tmp_path_factory, name, lambda f: _export(
            calibrated_source, f, resolution, precision=precision, coreml_io=io))
    (path,) = folder.glob("*.mlpackage")
    headroom = Headroom()
    metrics = _sim_against_torch(path, calibrated_source, images_dir, headroom=headroom)
    assert not metrics.output_constant and not metrics.reference_constant, metrics
    if precision == "fp32":
        assert metrics.cosine >= 0.99999, metrics
    else:
        assert metrics.cosine >= 0.999, metrics
    assert metrics.top1_agreement == 1.0, metrics
    least = headroom.least()
    if precision == "fp16":  # every op's output is fp16 and within range (the deploy norm is scaled: models)
        assert least is not None and headroom.overflowing() == [] and least.max_abs < 65504, least
    else:
        assert least is None  # no fp16 op at all


@pytest.mark.parametrize("variant", ["shvit_s2", "shvit_s3", "shvit_s4"])
def test_s2_to_s4_fp32_programs_match_pytorch(variant, tmp_path):
    """Untrained (seeded) S2-S4 at 224, fp32 tensor I/O, on seeded random inputs: the interpreter runs every op
    the larger variants emit, to float32 accuracy (their fp16 image programs pass verify in the interpreter:
    test_export.py::test_larger_variants_export_and_match)."""
    source = load_source(variant=variant, checkpoint=None, seed=0)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    with torch.no_grad():
        reference = source.model(torch.from_numpy(x)).numpy()
    path = _export(source, tmp_path, (224, 224), precision="fp32", coreml_io="tensor")
    metrics = compare(Program.load(path).run({"image": x})["logits"], reference)
    assert metrics.cosine >= 0.99999 and not metrics.output_constant, (variant, metrics)


# --- three broken programs ---------------------------------------------------------------------------------------

def _broken_export(source, folder, monkeypatch, change):
    """An export whose Core ML ImageType is changed by ``change(kwargs)``: a conversion gone wrong."""
    import coremltools as ct

    real = ct.ImageType

    def image_type(**kwargs):
        return real(**change(dict(kwargs)))

    with monkeypatch.context() as patch:
        patch.setattr(ct, "ImageType", image_type)
        return _export(source, folder, (224, 224))


@pytest.mark.parametrize("broken", ["channel order", "normalization"])
def test_a_broken_conversion_is_caught_by_the_interpreter(calibrated_source, images_dir, tmp_path, monkeypatch,
                                                          broken):
    """A conversion that reads BGR for the model's RGB, or forgets the mean: the interpreter's outputs move away
    from PyTorch's, and verify fails the package."""
    import coremltools as ct

    if broken == "channel order":
        def change(kw):
            return {**kw, "color_layout": ct.colorlayout.BGR}
    else:
        def change(kw):
            return {**kw, "bias": [0.0, 0.0, 0.0]}
    path = _broken_export(calibrated_source, tmp_path, monkeypatch, change)
    metrics = _sim_against_torch(path, calibrated_source, images_dir)
    assert metrics.cosine < 0.999 or metrics.top1_agreement < 1.0, metrics
    (result,) = verify([path], VerifyOptions(images=str(images_dir), samples=0))
    assert result.status == "fail", result


def test_an_fp16_overflow_is_reported_failing_with_the_op_named(calibrated_fresh, images_dir, tmp_path):
    """The same function in fp32, scaled inside so that one FFN's hidden activations exceed 65504: the fp32
    reference cannot see it, the fp16 program overflows; verify fails it naming the op, and the fp32 program of
    the same weights passes."""
    source = calibrated_fresh()
    ffn = source.model.stages[2].blocks[0].ffn.m
    with torch.no_grad():  # pw1's output x 2**12 (BN scale and shift), pw2's input weights / 2**12; relu between
        ffn.pw1.bn.weight.mul_(2.0 ** 12)
        ffn.pw1.bn.bias.mul_(2.0 ** 12)
        ffn.pw2.c.weight.div_(2.0 ** 12)
    fp16 = _export(source, tmp_path / "fp16", (224, 224))
    (result,) = verify([fp16], VerifyOptions(images=str(images_dir), samples=0))
    assert result.status == "fail", result
    headroom = result.details["fp16_headroom"]
    assert headroom["overflowing"], headroom
    first = headroom["overflowing"][0]
    assert f"fp16 overflow: op {first} (conv)" in result.reason, result.reason
    assert {op["op"]: op["type"] for op in headroom["ops"]}[first] == "conv"
    fp32 = _export(source, tmp_path / "fp32", (224, 224), precision="fp32")
    (result,) = verify([fp32], VerifyOptions(images=str(images_dir), samples=0))
    assert result.status == "pass", result


def test_device_like_modes_run_beside_and_an_unknown_runtime_is_a_usage_error(calibrated_224, images_dir,
                                                                              tmp_path):
    import shutil

    from shvit_edge.errors import UsageError

    folder = shutil.copytree(calibrated_224, tmp_path / "a")
    (path,) = folder.glob("*.mlpackage")
    results = verify([path], VerifyOptions(images=str(images_dir), samples=0,
                                           runtimes=("coreml-sim:flush-subnormals+fp16-accumulation",)))
    assert [r.status for r in results] == ["pass", "pass"], results
    assert "flush-subnormals, fp16-accumulation" in results[1].runtime
    with pytest.raises(UsageError, match="--runtime coreml-simulator"):
        verify([path], VerifyOptions(images=str(images_dir), samples=0, runtimes=("coreml-simulator",)))
