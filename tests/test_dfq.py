"""Data-free quantization transforms (shvit_edge.models.dfq): cross-layer equalization is float-exact and really
equalizes the pairs' weight ranges; bias correction subtracts the expected error of the quantized weights; both
leave their input model untouched."""

from __future__ import annotations

import pytest
import torch

from conftest import assert_reacts, randomize
from shvit_edge.models import dfq
from shvit_edge.models.reparam import reparameterize
from shvit_edge.models.shvit import SHViT


@pytest.fixture(scope="module")
def models():
    """A small SHViT (S1's structure, narrower and one block per stage: every kind of pair, cheap), randomized."""
    small = SHViT(embed_dim=(32, 48, 64), depth=(1, 1, 1), partial_dim=(8, 12, 16), qk_dim=(8, 8, 8),
                  types=("i", "s", "s"), num_classes=10)
    unfused = randomize(small, seed=1)
    return unfused, reparameterize(unfused)


def _inputs(seed: int = 3):
    return torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def test_the_pairs_are_the_stem_the_ffns_the_patch_mergings_and_their_squeeze_excites(models):
    _, deploy = models
    pairs = dfq.relu_pairs(deploy)
    assert pairs[:3] == [("patch_embed.0", "patch_embed.2"), ("patch_embed.2", "patch_embed.4"),
                         ("patch_embed.4", "patch_embed.6")]
    names = [b for _, b in pairs]
    assert sum(n.endswith(".m.pw2") for n in names) == 7  # a block's FFN, and two in each downsample
    assert {"stages.1.downsample.2.conv2", "stages.1.downsample.2.se.fc2", "stages.2.downsample.2.conv2"} <= \
        set(names)


@torch.no_grad()
def test_cle_is_float_exact_and_leaves_its_input_untouched(models):
    _, deploy = models
    x = _inputs()
    assert_reacts(deploy, x)
    before = {k: v.clone() for k, v in deploy.state_dict().items()}
    reference = deploy(x)
    equalized = dfq.cross_layer_equalization(deploy)
    out = equalized(x)
    scale = float(reference.abs().max())
    assert float((out - reference).abs().max()) <= 1e-4 * scale, float((out - reference).abs().max())
    assert all(torch.equal(before[k], v) for k, v in deploy.state_dict().items())  # a new model, input untouched
    changed = [k for k, v in equalized.state_dict().items() if not torch.allclose(v, before[k])]
    assert any(k.startswith("patch_embed.0") for k in changed) and len(changed) > 20


@torch.no_grad()
def test_cle_equalizes_the_weight_ranges_of_each_pair(models):
    _, deploy = models
    equalized = dfq.cross_layer_equalization(deploy)
    modules, original = dict(equalized.named_modules()), dict(deploy.named_modules())
    spreads = []
    for name1, name2 in dfq.relu_pairs(deploy):
        r1, r2 = dfq._output_ranges(modules[name1]), dfq._input_ranges(modules[name2])
        live = (r1 > 0) & (r2 > 0)
        # both sides of every channel end with the same range, sqrt(r1 r2) of the chain's last sweep
        assert torch.allclose(r1[live], r2[live], rtol=1e-3), (name1, name2, float((r1 / r2)[live].max()))
        before = dfq._output_ranges(original[name1]) / dfq._input_ranges(original[name2])
        spreads.append(float(before[live].max() / before[live].min()))
    assert sorted(spreads)[len(spreads) // 2] > 2, spreads  # there was something to equalize in most pairs


@torch.no_grad()
def test_bias_correction_subtracts_the_expected_weight_error(models):
    unfused, deploy = models
    stats = dfq.preactivation_statistics(unfused)
    corrected = dfq.bias_correction(deploy, stats)
    modules, original = dict(corrected.named_modules()), dict(deploy.named_modules())
    name1, name2 = "stages.0.blocks.0.ffn.m.pw1", "stages.0.blocks.0.ffn.m.pw2"
    mean, std = stats[name1]
    # E[ReLU(z)], z ~ N(mean, std^2), by sampling
    z = mean[:, None] + std[:, None] * torch.randn(len(mean), 20_000, generator=torch.Generator().manual_seed(0))
    expected = z.clamp(min=0).mean(dim=1)
    w = original[name2].weight[:, :, 0, 0]
    error = dfq.int8_per_channel(w) - w
    shift = original[name2].bias - modules[name2].bias
    assert torch.allclose(shift, error @ expected, atol=2e-2 * float((error.abs() @ expected).max())), \
        float((shift - error @ expected).abs().max())
    assert torch.equal(original[name2].weight, modules[name2].weight)  # only the bias moves
    x = _inputs()
    float_out = deploy(x)
    assert float((corrected(x) - float_out).abs().max()) > 0  # it does change the float model (slightly)


def test_apply_checks_the_names_and_orders_the_transforms(models):
    unfused, deploy = models
    with pytest.raises(ValueError, match="unknown data-free transform"):
        dfq.apply(deploy, unfused, ("adaround",))
    both = dfq.apply(deploy, unfused, ("bias-correction", "cross-layer-equalization"))
    x = _inputs()
    with torch.no_grad():
        assert float((both(x) - deploy(x)).abs().max()) < 0.05 * float(deploy(x).abs().max())


def test_coverage_counts_what_each_transform_acts_on(models):
    unfused, deploy = models
    found = dfq.coverage(deploy, unfused)
    assert found["cross-layer-equalization"] == len(dfq.relu_pairs(deploy)) > 0
    # the pairs whose first conv is a ConvNorm, whose BatchNorm gives the ReLU's input statistics (not the
    # squeeze-excites' plain fc1)
    stats = dfq.preactivation_statistics(unfused)
    assert found["bias-correction"] == sum(a in stats for a, _ in dfq.relu_pairs(deploy))
    assert 0 < found["bias-correction"] < found["cross-layer-equalization"]


@pytest.mark.parametrize("variant,choice,missing", [
    ("sepvit_lite", "cle", "cross-layer-equalization"),  # GELU only: no ReLU pair
    ("mobilevitv2_050", "cle+bias-correction", "cross-layer-equalization"),  # SiLU only
    ("mobilevitv2_050", "bias-correction", "bias-correction"),
])
def test_a_transform_with_nothing_to_act_on_is_refused_before_anything_is_written(tmp_path, variant, choice,
                                                                                   missing):
    """``--dfq`` used to leave a family without ReLU pairs as it was and record the transform in the manifest."""
    from click.testing import CliRunner

    from shvit_edge.cli import cli

    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["export", "--target", "onnx", "--variant", variant, "--resolution", "64",
                                      "--quantize", "int8", "--calibration", "random", "--calibration-samples", "2",
                                      "--dfq", choice, "--no-verify", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert f"--dfq {choice}: {missing} has nothing to act on in {variant}" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_dfq_outside_int8_is_refused(tmp_path):
    from click.testing import CliRunner

    from shvit_edge.cli import cli

    result = CliRunner().invoke(cli, ["export", "--target", "onnx", "--variant", "shvit_s1", "--resolution", "64",
                                      "--quantize", "int8-dynamic", "--dfq", "cle", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--dfq cle applies to --quantize int8 on" in result.output, result.output
    assert not (tmp_path / "o").exists()
