"""MobileViTv2 (Mehta & Rastegari, "Separable Self-attention for Mobile Vision Transformers", TMLR 2023): the
training form in timm's module layout, and its deploy form.

The module layout is timm's ``mobilevitv2_*`` (a ByobNet): ``stem`` (Conv-BN-SiLU), ``stages.0`` ...
``stages.4``, ``head.fc``. Stages 0 and 1 are MobileNetV2 inverted residuals (timm's ``BottleneckBlock`` with
``bottle_in``: ``conv1_1x1``, ``conv2_kxk`` depthwise, ``conv3_1x1`` linear; a skip only where shape and stride
allow); stages 2-4 are a stride-2 inverted residual then a :class:`MobileViTv2Block` (``conv_kxk``,
``conv_1x1``, ``transformer.N`` of ``norm1``/``attn.qkv_proj``/``attn.out_proj``/``norm2``/``mlp.fc1``/
``mlp.fc2``, ``norm``, ``conv_proj``). timm's ``ConvNormAct`` children are ``conv`` and ``bn`` (its activation
lives inside ``bn`` and has no parameters), so a timm state dict loads here key for key. Nothing imports timm.

Separable self-attention works on a map unfolded into ``[B, C, P, N]``: P pixels per 2x2 patch, N patches. Per
pixel position p, a one-channel query is softmaxed over the N patches, the keys are summed with those weights
into one context vector, and each value (after ReLU) is scaled by it. Every other op of the transformer is a
1x1 conv or a GroupNorm(1) over all of (C, P, N), which do not care how positions are ordered; only the grouping
into the P sets matters.

Resolutions: timm bilinearly resizes a map whose side is not a multiple of the patch before the block and back
after it. Here such a map is refused (the family's rule: sides a multiple of 64, which keeps the maps of
stages 2-4, 1/8, 1/16 and 1/32 of the input, even), so the exported graph has no resize.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .shvit import fuse_modules


class ConvNormAct(nn.Module):
    """timm's ``ConvNormAct``: a bias-free conv (``conv``, "same" padding for odd kernels), BatchNorm (``bn``),
    and SiLU unless ``act`` is False."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                 act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act: nn.Module = nn.SiLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        """The conv with the BatchNorm folded in, followed by the activation if there is one."""
        c, bn = self.conv, self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        conv = nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.dilation, c.groups,
                         bias=True, device=c.weight.device, dtype=c.weight.dtype)
        conv.weight.copy_(c.weight * scale[:, None, None, None])
        conv.bias.copy_(bn.bias - bn.running_mean * scale)
        return conv if isinstance(self.act, nn.Identity) else nn.Sequential(conv, self.act)


class InvertedResidual(nn.Module):
    """MobileNetV2's inverted residual as timm's byobnet ``BottleneckBlock`` builds it for MobileViT: 1x1
    expand (x ``expand``) with SiLU, depthwise 3x3 (stride) with SiLU, linear 1x1 project; ``x +`` the branch
    when input and output have the same shape (timm's identity shortcut), the branch alone otherwise (timm's
    ``downsample=''``: no projection shortcut)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, expand: float = 2.0):
        super().__init__()
        mid = int(in_ch * expand)
        self.conv1_1x1 = ConvNormAct(in_ch, mid)
        self.conv2_kxk = ConvNormAct(mid, mid, 3, stride, groups=mid)
        self.conv3_1x1 = ConvNormAct(mid, out_ch, act=False)
        self.has_skip = in_ch == out_ch and stride == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3_1x1(self.conv2_kxk(self.conv1_1x1(x)))
        return x + out if self.has_skip else out


class LinearSelfAttention(nn.Module):
    """Separable self-attention on ``[B, C, P, N]``: ``qkv_proj`` (1x1 conv) to a query channel, C key and C
    value channels; the query softmaxed over N; the context ``sum_N key * softmax(query)``; ``out_proj`` of
    ``relu(value) * context``."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.qkv_proj = nn.Conv2d(dim, 1 + 2 * dim, 1)
        self.out_proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query, key, value = self.qkv_proj(x).split([1, self.dim, self.dim], dim=1)
        context = (key * F.softmax(query, dim=-1)).sum(dim=-1, keepdim=True)
        return self.out_proj(F.relu(value) * context)

    @torch.no_grad()
    def fuse(self) -> "LinearSelfAttentionDeploy":
        return LinearSelfAttentionDeploy(self.dim, self.qkv_proj, self.out_proj)


class LinearSelfAttentionDeploy(nn.Module):
    """:class:`LinearSelfAttention` in ops XNNPACK delegates, computing what it computes there.

    Slices instead of ``split_with_sizes``; the sum over N as a mean over the two inner dims of a
    ``[B, C*P, 1, N]`` view (XNNPACK's global average pool; it takes no ``sum`` and no mean over one dim) times
    N, a constant of the exported shape. The query's softmax runs on a rank-3 ``[B, P, N]`` view: ExecuTorch's
    XNNPACK delegate (1.5) keeps a conv's rank-4 output in NHWC and runs ``softmax(dim=-1)`` on it over the
    innermost stored dim, the channels, not W (cosine 0.15 against eager); a view is laid out NCHW first."""

    def __init__(self, dim: int, qkv_proj: nn.Conv2d, out_proj: nn.Conv2d):
        super().__init__()
        self.dim = dim
        self.qkv_proj = qkv_proj  # carries the preceding GroupNorm's affine (LinearTransformerBlock.fuse)
        self.out_proj = out_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, p, n = x.shape
        d = self.dim
        qkv = self.qkv_proj(x)
        query, key, value = qkv[:, :1], qkv[:, 1:1 + d], qkv[:, 1 + d:]
        weighted = key * F.softmax(query.reshape(b, p, n), dim=-1).reshape(b, 1, p, n)
        context = weighted.reshape(b, d * p, 1, n).mean((2, 3), keepdim=True).reshape(b, d, p, 1) * float(n)
        return self.out_proj(F.relu(value) * context)


class ConvMlp(nn.Module):
    """timm's ``ConvMlp``: 1x1 conv (``fc1``), SiLU, 1x1 conv (``fc2``)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.SiLU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class GroupNorm1Deploy(nn.Module):
    """GroupNorm(1, C) without affine (the affine is folded into the next 1x1 conv): statistics over (C, H, W)
    of each sample, biased variance, in ops XNNPACK delegates (``native_group_norm`` stays on portable kernels),
    and accurate in float16 at any activation scale.

    Each statistic is a spatial mean (global average pool) of the map, then a 1x1 conv with weight 1/C to one
    channel: C MACs per statistic rather than C per position. The deviations are divided by their mean absolute
    value (plus :data:`SCALE_FLOOR`, so a constant map gives 0, not 0/0) before they are squared, and eps by its
    square: ``y = d / s`` and ``y * rsqrt(mean(y^2) + (sqrt(eps) / s)^2)`` is ``d * rsqrt(mean(d^2) + eps)`` for
    any s > 0. A fixed scale (SHViT's 2^-4) cannot serve both ends in float16: deviations of 0.02 (untrained
    MobileViTv2-2.0) squared and scaled fell to subnormals (Core ML fp16 at 35 dB SQNR, top-1 flips), while
    unscaled squares overflow past 256."""

    def __init__(self, channels: int, eps: float, like: torch.Tensor):
        super().__init__()
        kwargs = {"dtype": like.dtype, "device": like.device}
        self.register_buffer("channel_mean", torch.full((1, channels, 1, 1), 1.0 / channels, **kwargs),
                             persistent=False)
        self.register_buffer("floor", torch.full((1,), SCALE_FLOOR, **kwargs), persistent=False)
        # a tensor, not a float: float / tensor exports as ``reciprocal``, which XNNPACK does not take
        self.register_buffer("sqrt_eps", torch.full((1, 1, 1, 1), eps ** 0.5, **kwargs), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x - F.conv2d(x.mean((2, 3), keepdim=True), self.channel_mean)
        scale = F.conv2d(d.abs().mean((2, 3), keepdim=True), self.channel_mean, self.floor)
        y = d / scale
        e = self.sqrt_eps / scale
        var_eps = F.conv2d((y * y).mean((2, 3), keepdim=True), self.channel_mean) + e * e
        return y * torch.rsqrt(var_eps)


#: added to the mean absolute deviation :class:`GroupNorm1Deploy` divides by: keeps ``sqrt(eps) / scale`` (at most
#: 32 for eps 1e-5) and its square within float16 for a constant map; any positive value gives the same function
SCALE_FLOOR = 1e-4


@torch.no_grad()
def _fold_affine(norm: nn.GroupNorm, conv: nn.Conv2d) -> GroupNorm1Deploy:
    """Fold ``norm``'s per-channel affine into the 1x1 ``conv`` after it (in place; exact: no padding) and
    return the affine-free normalization that replaces ``norm``."""
    if norm.affine:  # W (x_hat * g + b) + c == (W g) x_hat + (W b + c)
        if conv.bias is None:
            conv.bias = nn.Parameter(torch.zeros(conv.out_channels, dtype=conv.weight.dtype,
                                                 device=conv.weight.device))
        conv.bias.add_(conv.weight[:, :, 0, 0] @ norm.bias)
        conv.weight.mul_(norm.weight[None, :, None, None])
    return GroupNorm1Deploy(norm.num_channels, norm.eps, conv.weight)


class LinearTransformerBlock(nn.Module):
    """Pre-norm transformer block on ``[B, C, P, N]``: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``;
    both norms GroupNorm(1, C) (timm's ``GroupNorm1``)."""

    def __init__(self, dim: int, mlp_ratio: float = 2.0):
        super().__init__()
        self.norm1: nn.Module = nn.GroupNorm(1, dim)
        self.attn: nn.Module = LinearSelfAttention(dim)
        self.norm2: nn.Module = nn.GroupNorm(1, dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    @torch.no_grad()
    def fuse(self) -> "LinearTransformerBlock":
        """Each norm's affine into the 1x1 conv after it (``attn.qkv_proj``, ``mlp.fc1``); the norms become
        :class:`GroupNorm1Deploy`; the caller's walk turns ``attn`` into its deploy form."""
        if isinstance(self.norm1, nn.GroupNorm):
            self.norm1 = _fold_affine(self.norm1, self.attn.qkv_proj)
        if isinstance(self.norm2, nn.GroupNorm):
            self.norm2 = _fold_affine(self.norm2, self.mlp.fc1)
        return self


def unfold_patches(x: torch.Tensor, patch: int) -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[B, C, P, N]``: P = patch * patch pixel positions (row-major within a patch),
    N = (H / patch) * (W / patch) patches (row-major): timm's order, with reshapes and permutes of rank 4 only
    (Core ML and TFLite take no rank-6 transpose)."""
    b, c, h, w = x.shape
    nh, nw = h // patch, w // patch
    x = x.reshape(b * c * nh, patch, nw, patch).permute(0, 1, 3, 2)  # (b c i), ph, pw, j
    x = x.reshape(b * c, nh, patch * patch, nw).permute(0, 2, 1, 3)  # (b c), p, i, j
    return x.reshape(b, c, patch * patch, nh * nw)


def fold_patches(x: torch.Tensor, h: int, w: int, patch: int) -> torch.Tensor:
    """The inverse of :func:`unfold_patches`: ``[B, C, P, N]`` -> ``[B, C, H, W]``."""
    b, c = x.shape[:2]
    nh, nw = h // patch, w // patch
    x = x.reshape(b * c, patch * patch, nh, nw).permute(0, 2, 1, 3)  # (b c), i, p, j
    x = x.reshape(b * c * nh, patch, patch, nw).permute(0, 1, 3, 2)  # (b c i), ph, j, pw
    return x.reshape(b, c, h, w)


class MobileViTv2Block(nn.Module):
    """Local representation (depthwise 3x3 Conv-BN-SiLU ``conv_kxk``, bias-free 1x1 ``conv_1x1`` to the
    transformer width), unfold into 2x2 patches, ``transformer`` blocks, GroupNorm(1) ``norm``, fold, linear
    1x1 Conv-BN ``conv_proj`` back to the block's width. No residual and no fusion conv (MobileViTv2 dropped
    both of MobileViT's)."""

    def __init__(self, dim: int, transformer_dim: int, depth: int, patch_size: int = 2, mlp_ratio: float = 2.0):
        super().__init__()
        self.patch_size = patch_size
        self.conv_kxk = ConvNormAct(dim, dim, 3, groups=dim)
        self.conv_1x1 = nn.Conv2d(dim, transformer_dim, 1, bias=False)
        self.transformer = nn.Sequential(*[LinearTransformerBlock(transformer_dim, mlp_ratio) for _ in range(depth)])
        self.norm: nn.Module = nn.GroupNorm(1, transformer_dim)
        self.conv_proj: nn.Module = ConvNormAct(transformer_dim, dim, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"a MobileViTv2 block takes maps whose sides are multiples of {p}, got {h}x{w} "
                             "(timm resizes them bilinearly; this model does not)")
        x = unfold_patches(self.conv_1x1(self.conv_kxk(x)), p)
        x = self.norm(self.transformer(x))
        return self.conv_proj(fold_patches(x, h, w, p))

    @torch.no_grad()
    def fuse(self) -> "MobileViTv2Block":
        """``conv_proj``'s BatchNorm into its conv, then ``norm``'s affine into that conv too (the fold between
        them only moves positions, and the conv is 1x1)."""
        if isinstance(self.conv_proj, ConvNormAct):
            self.conv_proj = self.conv_proj.fuse()
        if isinstance(self.norm, nn.GroupNorm):
            self.norm = _fold_affine(self.norm, self.conv_proj)
        return self


class ClassifierHead(nn.Module):
    """timm's ``ClassifierHead`` with average pooling: global mean, flatten, ``fc``."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # keepdim then flatten: the same values, and a global average pool that XNNPACK delegates
        return self.fc(x.mean((2, 3), keepdim=True).flatten(1))


class MobileViTv2(nn.Module):
    """The MobileViTv2 classifier at one width: stem (3x3 stride 2, ``stem_ch``), five stages of output widths
    ``channels`` (strides 1, 2, 2, 2, 2; stages 2-4 end in a MobileViTv2 block of ``transformer_dims`` and
    ``transformer_depths``), global average pooling, a linear head."""

    def __init__(self, stem_ch: int, channels: Sequence[int], transformer_dims: Sequence[int],
                 transformer_depths: Sequence[int], num_classes: int = 1000, in_chans: int = 3,
                 patch_size: int = 2, expand: float = 2.0):
        super().__init__()
        if num_classes < 1:
            raise ValueError("num_classes must be at least 1")
        c0, c1, c2, c3, c4 = channels
        self.stem = ConvNormAct(in_chans, stem_ch, 3, 2)
        stages = [nn.Sequential(InvertedResidual(stem_ch, c0, 1, expand)),
                  nn.Sequential(InvertedResidual(c0, c1, 2, expand), InvertedResidual(c1, c1, 1, expand))]
        prev = c1
        for ch, t_dim, depth in zip((c2, c3, c4), transformer_dims, transformer_depths, strict=True):
            stages.append(nn.Sequential(InvertedResidual(prev, ch, 2, expand),
                                        MobileViTv2Block(ch, t_dim, depth, patch_size)))
            prev = ch
        self.stages = nn.Sequential(*stages)
        self.num_classes = num_classes
        self.num_features = c4
        self.head = ClassifierHead(c4, num_classes)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        """timm's ByobNet initialisation, so an untrained model's activations are of a trained one's scale
        (PyTorch's default conv init shrinks them to ~1e-6 by the first transformer): conv weights
        N(0, 2 / fan_out), linear N(0, 0.01^2), zero biases, unit BatchNorms; the last BatchNorm of a residual
        inverted residual at zero (``zero_init_last``). Meta tensors (the shape-only models checkpoint loading
        compares against) hold no values: drawing for them costs a second per model and is skipped."""
        if self.head.fc.weight.is_meta:
            return
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                m.weight.normal_(0.0, (2.0 / fan_out) ** 0.5)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.Linear):
                m.weight.normal_(0.0, 0.01)
                m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.zero_()
        for m in self.modules():  # after the BatchNorms' init, as timm's depth-first walk does it
            if isinstance(m, InvertedResidual) and m.has_skip:
                m.conv3_1x1.bn.weight.zero_()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)


def reparameterize(model: MobileViTv2, input_std: Sequence[float] | None = None) -> MobileViTv2:
    """A fused copy of ``model`` in eval mode (``model`` untouched): every Conv-BN into a conv, every
    GroupNorm's affine into the 1x1 conv after it and its statistics into :class:`GroupNorm1Deploy`, each
    separable self-attention into :class:`LinearSelfAttentionDeploy`.

    ``input_std``: fold ``1/std`` per input channel into the stem conv (exact: its zero padding is zero in both
    spaces), for inputs that subtract only the mean.
    """
    from ..errors import CheckFailed

    if not isinstance(model, nn.Module):
        raise TypeError(f"reparameterize takes an nn.Module, not {type(model).__name__}")
    fused = fuse_modules(copy.deepcopy(model).eval()).eval()
    leftover = [name for name, m in fused.named_modules() if isinstance(m, _NORMS)]
    if leftover:
        raise CheckFailed(f"reparameterization left {len(leftover)} norm layer(s) unfused: "
                          f"{', '.join(leftover[:5])}{' ...' if len(leftover) > 5 else ''}")
    if input_std is not None:
        from .reparam import fold_input_std

        fold_input_std(fused, input_std)
    return fused
