"""Reparameterization: the deploy form of an SHViT, numerically the same function without BatchNorm."""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn as nn

from ..errors import CheckFailed
from .shvit import SHViT, fuse_modules

_NORMS = (nn.modules.batchnorm._BatchNorm,)


def reparameterize(model: SHViT, input_std: Sequence[float] | None = None) -> SHViT:
    """A fused copy of ``model`` in eval mode; ``model`` itself is left untouched.

    Folds every Conv-BN into a Conv, BN-Linear into a Linear, each residual depthwise Conv-BN into one conv
    with the identity added to its centre tap, SHSA's GroupNorm affine into the qkv conv, and merges the two
    distillation heads into one Linear.

    ``input_std``: fold ``1/std`` per input channel into the first conv, so the fused model takes
    ``x - mean`` instead of ``(x - mean) / std``. That is exact, because the conv's zero padding is zero in
    both spaces; the mean cannot be folded into a padded conv exactly and belongs in the image input's bias.

    Raises :class:`~shvit_edge.errors.CheckFailed` if any BatchNorm is left afterwards.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"reparameterize takes an nn.Module, not {type(model).__name__}")
    fused = copy.deepcopy(model).eval()
    fused = fuse_modules(fused)
    leftover = [name for name, m in fused.named_modules() if isinstance(m, _NORMS)]
    if leftover:
        raise CheckFailed(f"reparameterization left {len(leftover)} BatchNorm layer(s) unfused: "
                          f"{', '.join(leftover[:5])}{' ...' if len(leftover) > 5 else ''}")
    if input_std is not None:
        fold_input_std(fused, input_std)
    return fused


@torch.no_grad()
def fold_input_std(model: nn.Module, std: Sequence[float]) -> None:
    """Divide the first conv's weights by ``std`` per input channel (exact: its zero padding is zero in both
    spaces), for inputs that subtract only the mean; every family's deploy form folds ``input_std`` with it."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None or first.groups != 1:
        raise ValueError("no dense first conv to fold the input std into")
    std_t = torch.as_tensor(list(std), dtype=first.weight.dtype, device=first.weight.device)
    if std_t.numel() != first.in_channels or bool((std_t <= 0).any()):
        raise ValueError(f"input_std needs {first.in_channels} positive values, got {list(std)}")
    first.weight.div_(std_t[None, :, None, None])
