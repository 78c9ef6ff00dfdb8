"""Wrappers around the deploy form (:func:`~shvit_edge.models.reparam.reparameterize`) for other input layouts."""

from __future__ import annotations

import torch
import torch.nn as nn


class ChannelsLastInput(nn.Module):
    """Takes NHWC (what Android camera code has) and feeds the NCHW model; converters fold the permute."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.permute(0, 3, 1, 2))
