"""The deploy form every backend exports: reparameterized, and expressed in ops every runtime delegates."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .reparam import reparameterize


class ChannelsLastInput(nn.Module):
    """Takes NHWC (what Android camera code has) and feeds the NCHW model; converters fold the permute."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.permute(0, 3, 1, 2))


def deploy_model(model: nn.Module, input_std: Sequence[float] | None = None, layout: str = "nchw") -> nn.Module:
    """Reparameterize ``model`` (a copy; ``model`` is untouched) into its export form."""
    fused = reparameterize(model, input_std=input_std)
    if layout == "nhwc":
        return ChannelsLastInput(fused).eval()
    return fused
