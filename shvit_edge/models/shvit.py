"""SHViT: Single-Head Vision Transformer (Yun & Ro, CVPR 2024), training form and its fusion rules.

The module layout is timm's (``patch_embed``, ``stages.N.downsample``, ``stages.N.blocks``, ``head``), which
is the more readable of the two published layouts; the authors' layout (``blocks1..3``) is remapped on load
(:mod:`shvit_edge.models.checkpoint`). Parameter names below each line of the forward pass are therefore the
keys of a timm ``shvit_*`` state dict, plus ``head_dist`` for the authors' optional distillation head.

Every module that holds a BatchNorm knows how to fold it away (``fuse()``); :func:`shvit_edge.reparameterize`
applies those rules to a copy of the model. Nothing here imports timm.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def _make_divisible(value: float, divisor: int = 8) -> int:
    """timm's ``make_divisible`` with ``round_limit=0``, as its ``SqueezeExcite`` uses it."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


class ConvNorm(nn.Sequential):
    """Conv2d without bias followed by BatchNorm2d (``c``, ``bn``)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 1, stride: int = 1, padding: int = 0,
                 groups: int = 1, bn_weight_init: float = 1.0):
        super().__init__()
        self.add_module("c", nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(out_ch))
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.constant_(self.bn.bias, 0.0)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        c, bn = self.c, self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        conv = nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.dilation,
                         c.groups, bias=True, device=c.weight.device, dtype=c.weight.dtype)
        conv.weight.copy_(c.weight * scale[:, None, None, None])
        conv.bias.copy_(bn.bias - bn.running_mean * scale)
        return conv


class NormLinear(nn.Sequential):
    """BatchNorm1d followed by Linear (``bn``, ``l``)."""

    def __init__(self, in_features: int, out_features: int, std: float = 0.02):
        super().__init__()
        self.add_module("bn", nn.BatchNorm1d(in_features))
        self.add_module("l", nn.Linear(in_features, out_features))
        nn.init.trunc_normal_(self.l.weight, std=std)
        nn.init.constant_(self.l.bias, 0.0)

    @torch.no_grad()
    def fuse(self) -> nn.Linear:
        bn, lin = self.bn, self.l
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * scale
        out = nn.Linear(lin.in_features, lin.out_features, device=lin.weight.device, dtype=lin.weight.dtype)
        out.weight.copy_(lin.weight * scale[None, :])
        out.bias.copy_(lin.weight @ shift + lin.bias)
        return out


class Residual(nn.Module):
    """``x + m(x)``. A residual depthwise 3x3 ConvNorm fuses into one conv with the identity in its centre tap."""

    def __init__(self, m: nn.Module):
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.m(x)

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        if not isinstance(self.m, ConvNorm):
            return self  # the caller fuses the children
        conv = self.m.fuse()
        k_h, k_w = conv.kernel_size
        if conv.groups != conv.in_channels or conv.in_channels != conv.out_channels or k_h % 2 == 0 \
                or k_w % 2 == 0 or conv.stride != (1, 1) or conv.padding != (k_h // 2, k_w // 2):
            raise ValueError("only a same-size depthwise conv with odd kernel folds its residual identity")
        conv.weight[:, 0, k_h // 2, k_w // 2] += 1.0
        return conv


class SqueezeExcite(nn.Module):
    """timm's ``SqueezeExcite(channels, 0.25)``: mean, 1x1 conv, ReLU, 1x1 conv, sigmoid gate."""

    def __init__(self, channels: int, rd_ratio: float = 0.25):
        super().__init__()
        rd = _make_divisible(channels * rd_ratio)
        self.fc1 = nn.Conv2d(channels, rd, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(rd, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.fc2(self.act(self.fc1(s)))
        return x * torch.sigmoid(s)


class PatchMerging(nn.Module):
    """Stride-2 downsampling: 1x1 expand x4, depthwise 3x3 stride 2, SE, 1x1 project."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        hid = dim * 4
        self.conv1 = ConvNorm(dim, hid)
        self.act1 = nn.ReLU()
        self.conv2 = ConvNorm(hid, hid, 3, 2, 1, groups=hid)
        self.act2 = nn.ReLU()
        self.se = SqueezeExcite(hid, 0.25)
        self.conv3 = ConvNorm(hid, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.conv1(x))
        x = self.act2(self.conv2(x))
        return self.conv3(self.se(x))


class FFN(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.pw1 = ConvNorm(dim, hidden)
        self.act = nn.ReLU()
        self.pw2 = ConvNorm(hidden, dim, bn_weight_init=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw2(self.act(self.pw1(x)))


class SHSA(nn.Module):
    """Single-head self-attention on the first ``pdim`` channels; the rest pass through to the projection.

    Training form: GroupNorm(1) with affine, then a 1x1 ConvNorm to q, k, v. ``fuse()`` folds the qkv BatchNorm
    into its conv and the GroupNorm's per-channel affine into that conv's input side (exact: the conv is 1x1
    without padding) and returns the deploy form, :class:`SHSADeploy`.
    """

    def __init__(self, dim: int, qk_dim: int, pdim: int):
        super().__init__()
        self.scale = qk_dim ** -0.5
        self.qk_dim = qk_dim
        self.dim = dim
        self.pdim = pdim
        self.pre_norm = nn.GroupNorm(1, pdim)
        self.qkv: nn.Module = ConvNorm(pdim, qk_dim * 2 + pdim)
        self.proj = nn.Sequential(nn.ReLU(), ConvNorm(dim, dim, bn_weight_init=0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        x1, x2 = torch.split(x, [self.pdim, self.dim - self.pdim], dim=1)
        x1 = self.pre_norm(x1)
        q, k, v = torch.split(self.qkv(x1), [self.qk_dim, self.qk_dim, self.pdim], dim=1)
        q, k, v = q.flatten(2), k.flatten(2), v.flatten(2)
        attn = ((q.transpose(-2, -1) @ k) * self.scale).softmax(dim=-1)
        x1 = (v @ attn.transpose(-2, -1)).reshape(b, self.pdim, h, w)
        return self.proj(torch.cat([x1, x2], dim=1))

    @torch.no_grad()
    def fuse(self) -> "SHSADeploy":
        qkv = self.qkv.fuse() if isinstance(self.qkv, ConvNorm) else self.qkv
        norm = self.pre_norm
        if norm.affine:  # (x_hat * g + b) through a 1x1 conv == x_hat through the conv with W*g, bias + W@b
            qkv.bias.add_(qkv.weight[:, :, 0, 0] @ norm.bias)
            qkv.weight.mul_(norm.weight[None, :, None, None])
        # the attention scale on q^T k, folded into q's rows: (s q)^T k == s (q^T k)
        qkv.weight[:self.qk_dim].mul_(self.scale)
        qkv.bias[:self.qk_dim].mul_(self.scale)
        return SHSADeploy(self.dim, self.qk_dim, self.pdim, qkv, self.proj, norm.eps)


#: the power of two the deploy form's GroupNorm scales its deviations by before squaring them (fp16 headroom)
NORM_SCALE = 2.0 ** -4


class SHSADeploy(nn.Module):
    """The fused SHSA in ops every mobile runtime delegates; the same function as :class:`SHSA` in eval mode.

    ExecuTorch's XNNPACK partitioner leaves ``native_group_norm``, ``split_with_sizes`` and the ``expand``
    that a batched ``@`` decomposes into on portable kernels, splitting the graph into dozens of partitions.
    Here GroupNorm(1)'s statistics are a 1x1 conv with weight 1/C followed by a spatial mean, the splits are
    slices, and the matmuls are ``bmm``. Constants are folded where they cost an op: the attention scale into
    q's rows of ``qkv`` (done by :meth:`SHSA.fuse`) and GroupNorm's eps into the variance conv's bias, so each
    block is a few ops shorter, which every converter's passes and every runtime pay for per op.
    """

    def __init__(self, dim: int, qk_dim: int, pdim: int, qkv: nn.Conv2d, proj: nn.Module, eps: float):
        super().__init__()
        self.qk_dim = qk_dim
        self.dim = dim
        self.pdim = pdim
        self.eps = eps
        self.qkv = qkv  # q's rows carry the attention scale qk_dim ** -0.5
        self.proj = proj
        kwargs = {"dtype": qkv.weight.dtype, "device": qkv.weight.device}
        self.register_buffer("channel_mean", torch.full((1, pdim, 1, 1), 1.0 / pdim, **kwargs), persistent=False)
        self.register_buffer("eps_bias", torch.full((1,), eps * NORM_SCALE ** 2, **kwargs), persistent=False)

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        """GroupNorm(1, C) without affine: statistics over (C, H, W) of each sample, biased variance.

        The deviations are scaled by :data:`NORM_SCALE` before they are squared (and eps with them: the result
        is the same function, and in float32 the same bits, the scale being a power of two), so that the
        squares stay finite in float16 up to deviations of 4096 rather than 256: Core ML's fp16 programs
        overflowed here on real activations (found by the coreml-sim interpreter's fp16 headroom report)."""
        mu = F.conv2d(x, self.channel_mean).mean((2, 3), keepdim=True)
        d = (x - mu) * NORM_SCALE
        var_eps = F.conv2d(d * d, self.channel_mean, self.eps_bias).mean((2, 3), keepdim=True)  # var + eps, scaled
        return d * torch.rsqrt(var_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        qk, pd = self.qk_dim, self.pdim
        x1, x2 = x[:, :pd], x[:, pd:]
        qkv = self.qkv(self._normalize(x1)).flatten(2)
        q, k, v = qkv[:, :qk], qkv[:, qk:2 * qk], qkv[:, 2 * qk:]
        attn = torch.bmm(q.transpose(1, 2), k).softmax(dim=-1)
        x1 = torch.bmm(v, attn.transpose(1, 2)).reshape(b, pd, h, w)
        return self.proj(torch.cat([x1, x2], dim=1))


class BasicBlock(nn.Module):
    """Residual depthwise conv, then (type "s") residual SHSA or (type "i") nothing, then residual FFN."""

    def __init__(self, dim: int, qk_dim: int, pdim: int, block_type: str):
        super().__init__()
        self.conv = Residual(ConvNorm(dim, dim, 3, 1, 1, groups=dim, bn_weight_init=0.0))
        self.mixer: nn.Module = Residual(SHSA(dim, qk_dim, pdim)) if block_type == "s" else nn.Identity()
        self.ffn = Residual(FFN(dim, dim * 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.mixer(self.conv(x)))


class Stage(nn.Module):
    """A downsampling block (absent in the first stage) followed by ``depth`` basic blocks."""

    def __init__(self, prev_dim: int, dim: int, qk_dim: int, pdim: int, block_type: str, depth: int):
        super().__init__()
        if prev_dim != dim:
            self.downsample: nn.Module = nn.Sequential(
                Residual(ConvNorm(prev_dim, prev_dim, 3, 1, 1, groups=prev_dim)),
                Residual(FFN(prev_dim, prev_dim * 2)),
                PatchMerging(prev_dim, dim),
                Residual(ConvNorm(dim, dim, 3, 1, 1, groups=dim)),
                Residual(FFN(dim, dim * 2)),
            )
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(*[BasicBlock(dim, qk_dim, pdim, block_type) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


def patchify_stem(in_chans: int, dim: int) -> nn.Sequential:
    """The 16x16 patchify stem SHViT and EfficientViT share: four stride-2 3x3 ConvNorms (to dim/8, /4, /2, dim)
    with ReLUs between (keys ``0``, ``2``, ``4``, ``6``, as in both authors' code)."""
    return nn.Sequential(
        ConvNorm(in_chans, dim // 8, 3, 2, 1), nn.ReLU(),
        ConvNorm(dim // 8, dim // 4, 3, 2, 1), nn.ReLU(),
        ConvNorm(dim // 4, dim // 2, 3, 2, 1), nn.ReLU(),
        ConvNorm(dim // 2, dim, 3, 2, 1),
    )


class PooledHeads:
    """The classifier end SHViT and EfficientViT share (DeiT-style): global average pooling, then ``head`` and,
    with ``distillation``, ``head_dist``, whose outputs average in eval mode. A mixin of methods only, so the
    models' state dict keys stay their authors'."""

    def classify(self, features: torch.Tensor):
        # keepdim then flatten: the same values, and a global average pool that XNNPACK delegates
        x = features.mean((2, 3), keepdim=True).flatten(1)
        if not self.distillation:
            return self.head(x)
        out, out_dist = self.head(x), self.head_dist(x)
        if self.training:
            return out, out_dist
        return (out + out_dist) / 2

    @torch.no_grad()
    def fuse(self):
        """Fold the heads; the caller's walk fuses the rest. Two fused heads average into one Linear exactly."""
        if isinstance(self.head, NormLinear):
            self.head = self.head.fuse()
        if self.distillation:
            dist = self.head_dist.fuse() if isinstance(self.head_dist, NormLinear) else self.head_dist
            merged = nn.Linear(self.head.in_features, self.head.out_features,
                               device=self.head.weight.device, dtype=self.head.weight.dtype)
            merged.weight.copy_((self.head.weight + dist.weight) / 2)
            merged.bias.copy_((self.head.bias + dist.bias) / 2)
            self.head = merged
            del self.head_dist
            self.distillation = False
        return self


class SHViT(PooledHeads, nn.Module):
    """The SHViT classifier: 16x16 patchify stem of four stride-2 3x3 ConvNorms, three stages, BN-Linear head.

    With ``distillation=True`` a second head (``head_dist``) is trained; in eval mode the two heads' outputs
    are averaged, as in the authors' code. The fused (deploy) form has a single merged ``head``.
    """

    def __init__(self, embed_dim: Sequence[int], depth: Sequence[int], partial_dim: Sequence[int],
                 qk_dim: Sequence[int], types: Sequence[str], num_classes: int = 1000, distillation: bool = False,
                 in_chans: int = 3):
        super().__init__()
        if num_classes < 1:
            raise ValueError("num_classes must be at least 1")
        e0 = embed_dim[0]
        self.patch_embed = patchify_stem(in_chans, e0)
        stages, prev = [], e0
        for dim, d, pd, qk, t in zip(embed_dim, depth, partial_dim, qk_dim, types, strict=True):
            stages.append(Stage(prev, dim, qk, pd, t, d))
            prev = dim
        self.stages = nn.Sequential(*stages)
        self.num_classes = num_classes
        self.num_features = embed_dim[-1]
        self.head: nn.Module = NormLinear(self.num_features, num_classes)
        self.distillation = distillation
        if distillation:
            self.head_dist: nn.Module = NormLinear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.patch_embed(x))

    def forward(self, x: torch.Tensor):
        return self.classify(self.forward_features(x))


def fuse_modules(module: nn.Module) -> nn.Module:
    """Apply every ``fuse()`` rule in ``module``'s tree, in place; returns the (possibly replaced) root."""
    root = module.fuse() if hasattr(module, "fuse") else module
    for name, child in list(root.named_children()):
        setattr(root, name, fuse_modules(child))
    return root
