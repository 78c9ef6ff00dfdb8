"""The guard parity and quantization tests stand on (conftest.assert_reacts): a reference that ignores its input
would let an artifact that ignores its input pass, so such a reference must fail the guard."""

from __future__ import annotations

import pytest
import torch

from shvit_edge.export import load_source

from conftest import assert_reacts, photo_inputs


class Constant(torch.nn.Module):
    def forward(self, x):
        return torch.arange(1000, dtype=torch.float32).expand(len(x), -1)


class NearlyConstant(torch.nn.Module):
    """A large constant plus a tiny input-dependent part: the official fixture's behaviour, made on purpose."""

    def forward(self, x):
        return torch.arange(1000, dtype=torch.float32) + 1e-3 * x.mean(dim=(1, 2, 3), keepdim=True)


class SameForEveryInput(torch.nn.Module):
    """Reacts to zeros (its output on zeros differs) but gives every real input the same output."""

    def forward(self, x):
        return torch.where(x.abs().sum(dim=(1, 2, 3), keepdim=True) > 0, torch.ones(1, 1000), torch.zeros(1, 1000))


@pytest.mark.parametrize("model", [Constant(), NearlyConstant()])
def test_a_model_that_ignores_its_input_fails_the_guard(model):
    with pytest.raises(AssertionError, match="barely reacts to its input"):
        assert_reacts(model, photo_inputs())


def test_a_model_that_gives_every_input_one_output_fails_the_guard():
    with pytest.raises(AssertionError, match="gives every input the same output"):
        assert_reacts(SameForEveryInput(), photo_inputs())


def test_the_official_fixture_fails_the_guard_and_the_calibrated_one_passes(official_pth, calibrated_pth):
    x = photo_inputs()
    with pytest.raises(AssertionError, match="barely reacts"):
        assert_reacts(load_source(variant=None, checkpoint=str(official_pth)).model, x)
    assert_reacts(load_source(variant=None, checkpoint=str(calibrated_pth)).model, x)
