"""Data-free quantization transforms (Nagel et al., ICCV 2019, "Data-Free Quantization Through Weight
Equalization and Bias Correction") on the deploy model: each takes a model and returns a new one, the input left
untouched.

- :func:`cross_layer_equalization`: for two convs joined by a ReLU (``conv1 -> ReLU -> conv2``), output channel
  ``i`` of ``conv1`` (weights and bias) is divided by ``s_i > 0`` and input channel ``i`` of ``conv2`` multiplied
  by it. ``ReLU(x / s) == ReLU(x) / s`` for ``s > 0``, so the function is the same up to float rounding.
  ``s_i = sqrt(r1_i / r2_i)`` (``r1_i``: the largest ``|w|`` of ``conv1``'s output channel ``i``, ``r2_i``: of
  ``conv2``'s input channel ``i``) gives both the range ``sqrt(r1_i r2_i)``: the paper's optimum for
  per-tensor weights. Chains (the stem's four convs) are swept until the scales settle.
- :func:`bias_correction`: the expected error a quantized ``conv2`` weight adds to its output,
  ``E[(Q(W) - W) x]``, subtracted from its bias, with ``E[x]`` per channel computed without data from the
  BatchNorm before the ReLU (the pre-activation as ``N(beta, gamma^2)``, :func:`preactivation_statistics`).

The pairs in SHViT (:func:`relu_pairs`): the stem (``patch_embed.0 -> 2 -> 4 -> 6``), every FFN
(``pw1 -> pw2``), every PatchMerging (``conv1 -> conv2``, a depthwise conv) and its squeeze-excite
(``fc1 -> fc2``).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn


def relu_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv1, conv2) module names of every pair of convs joined by a ReLU alone, in forward order: consecutive
    children ``Conv2d, ReLU, Conv2d`` of a Sequential, and the named pairs of SHViT's FFN, PatchMerging and
    SqueezeExcite."""
    from .shvit import FFN, PatchMerging, SqueezeExcite

    pairs = []
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for (n1, m1), (_, act), (n2, m2) in zip(children, children[1:], children[2:], strict=False):
                if isinstance(m1, nn.Conv2d) and type(act) is nn.ReLU and isinstance(m2, nn.Conv2d):
                    pairs.append((prefix + n1, prefix + n2))
        for kind, first, second in ((FFN, "pw1", "pw2"), (PatchMerging, "conv1", "conv2"),
                                    (SqueezeExcite, "fc1", "fc2")):
            if isinstance(module, kind) and isinstance(getattr(module, first), nn.Conv2d) \
                    and isinstance(getattr(module, second), nn.Conv2d):
                pairs.append((prefix + first, prefix + second))
    return pairs


def _is_depthwise(conv: nn.Conv2d) -> bool:
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels


def _output_ranges(conv: nn.Conv2d) -> torch.Tensor:
    return conv.weight.detach().abs().flatten(1).amax(dim=1)


def _input_ranges(conv: nn.Conv2d) -> torch.Tensor:
    w = conv.weight.detach().abs()
    if _is_depthwise(conv):
        return w.flatten(1).amax(dim=1)
    if conv.groups != 1:
        raise ValueError("cross-layer equalization takes dense or depthwise convs, not grouped ones")
    return w.transpose(0, 1).flatten(1).amax(dim=1)


@torch.no_grad()
def _scale_pair(conv1: nn.Conv2d, conv2: nn.Conv2d, s: torch.Tensor) -> None:
    """conv1's output channel i divided by s_i, conv2's input channel i multiplied by it."""
    conv1.weight.div_(s.view(-1, 1, 1, 1))
    if conv1.bias is not None:
        conv1.bias.div_(s)
    conv2.weight.mul_(s.view(-1, 1, 1, 1) if _is_depthwise(conv2) else s.view(1, -1, 1, 1))


def equalization_scales(conv1: nn.Conv2d, conv2: nn.Conv2d, max_scale: float = 1e4) -> torch.Tensor:
    """``s_i = sqrt(r1_i / r2_i)``; 1 for a channel that is all zeros on either side, clamped to
    ``[1 / max_scale, max_scale]``."""
    r1, r2 = _output_ranges(conv1).double(), _input_ranges(conv2).double()
    s = torch.where((r1 > 0) & (r2 > 0), (r1 / r2.clamp(min=1e-30)).sqrt(), torch.ones_like(r1))
    return s.clamp(1 / max_scale, max_scale).to(conv1.weight.dtype)


@torch.no_grad()
def cross_layer_equalization(model: nn.Module, pairs: list[tuple[str, str]] | None = None, sweeps: int = 20,
                             tolerance: float = 1e-4, stats: dict | None = None):
    """A copy of ``model`` with every pair of ``pairs`` (default :func:`relu_pairs`) equalized; ``model`` is not
    changed. Pairs that share a conv (a chain) are swept in order up to ``sweeps`` times, until no scale moves by
    more than ``tolerance``.

    With ``stats`` (:func:`preactivation_statistics` of ``model``), returns ``(model, stats)``: the statistics
    of each ``conv1``'s output rescaled as the equalization rescaled it."""
    model = copy.deepcopy(model)
    stats = {k: (m.clone(), s.clone()) for k, (m, s) in stats.items()} if stats is not None else None
    modules = dict(model.named_modules())
    pairs = relu_pairs(model) if pairs is None else pairs
    for name1, name2 in pairs:
        for name in (name1, name2):
            if not isinstance(modules.get(name), nn.Conv2d):
                raise ValueError(f"{name}: not a Conv2d of the model")
    for _ in range(sweeps):
        moved = 0.0
        for name1, name2 in pairs:
            conv1, conv2 = modules[name1], modules[name2]
            s = equalization_scales(conv1, conv2)
            _scale_pair(conv1, conv2, s)
            if stats is not None and name1 in stats:
                mean, std = stats[name1]
                stats[name1] = (mean / s, std / s)
            moved = max(moved, float((s.double().log().abs()).max()))
        if moved < tolerance:
            break
    return (model, stats) if stats is not None else model


def preactivation_statistics(unfused: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per deploy-model conv name, the per-channel (mean, std) of its output on the training distribution as its
    BatchNorm records it (``beta``, ``|gamma|``): a ``ConvNorm`` named ``x`` in the unfused model becomes the conv
    ``x`` of the deploy model, whose output is the BatchNorm's."""
    from .shvit import ConvNorm

    out = {}
    for name, module in unfused.named_modules():
        if isinstance(module, ConvNorm):
            bn = module.bn
            out[name] = (bn.bias.detach().clone().float(), bn.weight.detach().abs().clone().float())
    return out


def _relu_mean(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``E[ReLU(z)]`` for ``z ~ N(mean, std^2)``, per channel."""
    std = std.clamp(min=1e-12)
    a = mean / std
    pdf = torch.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + torch.erf(a / math.sqrt(2)))
    return mean * cdf + std * pdf


def int8_per_channel(weight: torch.Tensor) -> torch.Tensor:
    """Symmetric int8 per output channel (scale = max |w| / 127), as XNNPACK, LiteRT and ORT quantize weights."""
    flat = weight.detach().reshape(weight.shape[0], -1)
    scale = (flat.abs().amax(dim=1) / 127).clamp(min=1e-12)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    return (weight / scale.view(shape)).round().clamp(-127, 127) * scale.view(shape)


@torch.no_grad()
def bias_correction(model: nn.Module, stats: dict, pairs: list[tuple[str, str]] | None = None,
                    quantize=int8_per_channel) -> nn.Module:
    """A copy of ``model`` in which each pair's ``conv2`` has ``E[(Q(W) - W) x]`` subtracted from its bias, with
    ``E[x] = E[ReLU(conv1 output)]`` from ``stats`` (:func:`preactivation_statistics`, rescaled by
    :func:`cross_layer_equalization` if it ran) and ``Q`` the weights' quantizer (default: int8 per channel).
    Padding is ignored: every tap is taken to see the mean."""
    model = copy.deepcopy(model)
    modules = dict(model.named_modules())
    for name1, name2 in relu_pairs(model) if pairs is None else pairs:
        if name1 not in stats:
            continue
        conv2 = modules[name2]
        expected = _relu_mean(*stats[name1]).to(conv2.weight.dtype)
        error = (quantize(conv2.weight) - conv2.weight).sum(dim=(2, 3))  # (out, in / groups)
        shift = error[:, 0] * expected if _is_depthwise(conv2) else error @ expected
        if conv2.bias is None:
            conv2.bias = nn.Parameter(torch.zeros(conv2.out_channels, dtype=conv2.weight.dtype))
        conv2.bias.sub_(shift)
    return model


def coverage(deploy: nn.Module, unfused: nn.Module) -> dict[str, int]:
    """Per transform, how many places of ``deploy`` it acts on: cross-layer equalization the conv pairs joined by
    a ReLU (:func:`relu_pairs`), bias correction those whose first conv's output statistics a BatchNorm of
    ``unfused`` records (:func:`preactivation_statistics`). 0: the transform would leave the model as it is."""
    pairs = relu_pairs(deploy)
    stats = preactivation_statistics(unfused)
    return {"cross-layer-equalization": len(pairs), "bias-correction": sum(a in stats for a, _ in pairs)}


#: why a transform finds nothing to act on, for :func:`coverage`'s zeros
NOTHING_TO_ACT_ON = {
    "cross-layer-equalization": "no two convs joined by a ReLU alone (it rescales through ReLU(x / s) = "
                                "ReLU(x) / s, which GELU, SiLU and hard-swish do not satisfy)",
    "bias-correction": "no conv after a ReLU whose input statistics a SHViT ConvNorm's BatchNorm records",
}


#: the names :func:`apply` takes, in the order it applies them
TRANSFORMS = ("cross-layer-equalization", "bias-correction")


def apply(deploy: nn.Module, unfused: nn.Module, transforms) -> nn.Module:
    """``deploy`` (the reparameterized ``unfused``) with ``transforms`` applied, in :data:`TRANSFORMS` order:
    a new model, both inputs untouched."""
    unknown = [t for t in transforms if t not in TRANSFORMS]
    if unknown:
        raise ValueError(f"unknown data-free transform {unknown[0]!r} (known: {', '.join(TRANSFORMS)})")
    stats = preactivation_statistics(unfused)
    model = copy.deepcopy(deploy)
    if "cross-layer-equalization" in transforms:
        model, stats = cross_layer_equalization(model, stats=stats)
    if "bias-correction" in transforms:
        model = bias_correction(model, stats)
    return model.eval()
