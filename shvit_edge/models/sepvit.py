"""SepViT (Li et al., "SepViT: Separable Vision Transformer", 2022): the training form in the authors' module
structure, and its deploy form.

The module layout is the authors' (liwei109/SepViT, ``classification/sepvit.py``): ``patch_embeds.i``
(``proj`` conv, ``norm``), ``pos_block.i.proj.0`` (the depthwise PEG conv after each stage's first block),
``blocks.i.j`` (``norm1``, ``attn``, ``norm2``, ``mlp.fc1/fc2``, and ``win_tokens`` where the block has more than
one window), ``attn.DSA_qkv``, ``attn.win_tokens_norm``, ``attn.PSA_qk``, ``attn.proj``, the final ``norm`` and
``head``; so a state dict of the authors' code loads key for key. Dropout and stochastic depth have no weights
and do nothing in eval mode: they are left out.

A block is depthwise self-attention (DSA: multi-head attention within each window, its learned window token
included, plus the normed input as shortcut) followed, when the stage's map has more than one window, by
pointwise self-attention (PSA: the windows' tokens, normed and GELU'd, attend to each other, and each window's
feature map is mixed by those weights), then a projection, and an MLP; both residual, pre-norm.

Resolutions. The authors' classifier is built for 224 only: a block has one learned window token per window of
its 224 map (``win_num = (56 / 2**stage / ws)**2``, 8x8 windows of 7 in stage 1, 4x4 or 2x2 in stage 2, 2x2 or
one in stage 3) and asserts the count at run time; a block with a single window attends over its whole map at any
size. Here each block keeps its grid of windows (``grid`` per side: 8, 4, 2 or 1) at every resolution and the
windows scale with the map, so each learned token stays with the part of the image it was trained on: at 224 the
windows are the authors' 7x7 and 14x14 and the function is theirs exactly; elsewhere every stage's map must divide
by its grids (sides a multiple of 32, :meth:`~shvit_edge.models.sepvit_family.SepViTFamily.check_resolution`).
(The authors' detection backbone takes other sizes by padding the map to whole ws x ws windows and putting zeros
in place of the learned tokens: another function, which a classification checkpoint was not trained for.)
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .shvit import NORM_SCALE, fuse_modules

#: the map side at which the authors count a block's windows (``224 // 4``: the stem's stride is 4)
TRAINED_MAP = 56


class Mlp(nn.Module):
    """Linear, GELU, Linear (timm's ``Mlp`` as the authors' ``TimmBlock`` builds it: ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SeparableAttention(nn.Module):
    """DSA within each window, then (``grid`` > 1) PSA across the windows, then the output projection.

    Input: the normed windows ``(B, windows, 1 + tokens, C)`` with each window's token first (one window of the
    whole map and no token when ``grid`` is 1). Output: ``(B, H*W, C)`` in raster order.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, grid: int = 1):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.grid = grid
        self.scale = (dim // num_heads) ** -0.5
        self.DSA_qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.do_PSA = grid > 1
        if self.do_PSA:
            self.win_tokens_norm = nn.LayerNorm(dim)
            self.win_tokens_act = nn.GELU()
            self.PSA_qk = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, wn, t, c = x.shape
        nh, hd = self.num_heads, c // self.num_heads
        # DSA: (B, windows, T, 3, heads, hd) -> 3 x (B, windows, heads, T, hd)
        q, k, v = self.DSA_qkv(x).reshape(b, wn, t, 3, nh, hd).permute(3, 0, 1, 4, 2, 5)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        out = (attn @ v).transpose(2, 3).reshape(b, wn, t, c) + x
        if not self.do_PSA:
            return self.proj(out.squeeze(1))
        # PSA: each window's token (after DSA) gives the window's query and key; its feature map is the value
        g = self.grid
        wh, ww = h // g, w // g
        tokens, feats = out[:, :, 0], out[:, :, 1:]
        tokens = self.win_tokens_act(self.win_tokens_norm(tokens))
        pq, pk = self.PSA_qk(tokens).reshape(b, wn, 2, nh, hd).permute(2, 0, 3, 1, 4)  # (B, heads, windows, hd)
        pv = feats.reshape(b, wn, t - 1, nh, hd).permute(0, 3, 1, 2, 4).reshape(b, nh, wn, -1)
        attn = ((pq @ pk.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        out = (attn @ pv).reshape(b, nh, wn, t - 1, hd).permute(0, 2, 3, 1, 4).reshape(b, wn, t - 1, c) + feats
        out = out.reshape(b, g, g, wh, ww, c).transpose(2, 3).reshape(b, h * w, c)  # windows back to raster order
        return self.proj(out)


def window_shape(grid: int, h: int, w: int) -> tuple[int, int]:
    """The (height, width) of the windows of a ``grid`` x ``grid`` split of an h x w map."""
    if h % grid or w % grid:
        raise ValueError(f"a {h}x{w} map does not split into a block's {grid}x{grid} windows (its window tokens "
                         "are learned per window): take input sides a multiple of 32")
    return h // grid, w // grid


class SepViTBlock(nn.Module):
    """Pre-norm residual separable attention and MLP (the authors' ``SepViTBlock``, a timm ``Block``).

    ``ws`` is the window side at 224; ``stage`` (0-3) its stage. The block's grid of windows per side is
    ``56 / 2**stage / ws``; with more than one window it learns one token per window (``win_tokens``).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, ws: int = 7,
                 stage: int = 0):
        super().__init__()
        self.ws = ws
        self.grid = (TRAINED_MAP >> stage) // ws
        if self.grid < 1:
            raise ValueError(f"window size {ws} is larger than stage {stage}'s map at 224")
        self.win_num = self.grid ** 2
        self.do_PSA = self.win_num > 1
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SeparableAttention(dim, num_heads, qkv_bias, self.grid)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        if self.do_PSA:
            self.win_tokens = nn.Parameter(torch.zeros(1, self.win_num, 1, dim))

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        if not self.do_PSA:
            windows = x.unsqueeze(1)
        else:
            g = self.grid
            wh, ww = window_shape(g, h, w)
            windows = x.reshape(b, g, wh, g, ww, c).transpose(2, 3).reshape(b, self.win_num, wh * ww, c)
            windows = torch.cat((self.win_tokens.expand(b, -1, -1, -1), windows), dim=2)
        x = x + self.attn(self.norm1(windows), h, w)
        return x + self.mlp(self.norm2(x))

    @torch.no_grad()
    def fuse(self) -> "SepViTBlockDeploy":
        return SepViTBlockDeploy(self)


class PatchEmbed(nn.Module):
    """A strided conv to tokens, then LayerNorm: 7x7 stride 4 (stage 1) or 3x3 stride 2, zero-padded by half the
    kernel. Returns the tokens ``(B, H*W, C)`` and the map's (H, W)."""

    def __init__(self, patch_size: int, stride: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride, patch_size // 2)
        self.norm: nn.Module = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)
        h, w = x.shape[2], x.shape[3]
        return self.norm(x.flatten(2).transpose(1, 2)), (h, w)

    @torch.no_grad()
    def fuse(self) -> "PatchEmbed":
        """Its LayerNorm as :class:`LayerNormDeploy`, in place (the caller's walk works on a copy)."""
        if isinstance(self.norm, nn.LayerNorm):
            self.norm = LayerNormDeploy.of(self.norm)
        return self


class PosCNN(nn.Module):
    """The positional encoding generator (PEG): tokens plus a depthwise 3x3 conv of their map
    (``proj.0``, with bias)."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim))

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        feat = x.transpose(1, 2).reshape(b, c, h, w)
        return (self.proj(feat) + feat).flatten(2).transpose(1, 2)

    @torch.no_grad()
    def fuse(self) -> "PosCNNDeploy":
        return PosCNNDeploy(self)


class PosCNNDeploy(nn.Module):
    """The PEG with its identity folded into the conv's centre tap: one depthwise conv."""

    @torch.no_grad()
    def __init__(self, peg: PosCNN):
        super().__init__()
        conv = copy.deepcopy(peg.proj[0])
        conv.weight[:, 0, 1, 1] += 1.0
        self.conv = conv

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        return self.conv(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)


class SepViT(nn.Module):
    """The SepViT classifier: four stages, each a patch embedding, its blocks (the PEG after the first), then
    LayerNorm, global average pooling and a linear head.

    ``window_sizes[i][j]``: stage i's block j's window side at 224 (the authors' ``ws``).
    """

    def __init__(self, embed_dims: Sequence[int], num_heads: Sequence[int], depths: Sequence[int],
                 window_sizes: Sequence[Sequence[int]], mlp_ratios: Sequence[float] = (4, 4, 4, 4),
                 qkv_bias: bool = True, patch_size: int = 7, in_chans: int = 3, num_classes: int = 1000):
        super().__init__()
        if num_classes < 1:
            raise ValueError("num_classes must be at least 1")
        self.depths = tuple(depths)
        self.patch_embeds = nn.ModuleList(
            PatchEmbed(patch_size, 4, in_chans, embed_dims[0]) if i == 0 else
            PatchEmbed(3, 2, embed_dims[i - 1], embed_dims[i]) for i in range(len(depths)))
        self.pos_block = nn.ModuleList(PosCNN(dim) for dim in embed_dims)
        self.blocks = nn.ModuleList(
            nn.ModuleList(SepViTBlock(embed_dims[k], num_heads[k], mlp_ratios[k], qkv_bias, window_sizes[k][i], k)
                          for i in range(depths[k]))
            for k in range(len(depths)))
        self.norm: nn.Module = nn.LayerNorm(embed_dims[-1], eps=1e-6)
        self.num_classes = num_classes
        self.num_features = embed_dims[-1]
        self.head = nn.Linear(embed_dims[-1], num_classes)
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        last = len(self.depths) - 1
        for i, (embed, blocks) in enumerate(zip(self.patch_embeds, self.blocks, strict=True)):
            x, (h, w) = embed(x)
            for j, block in enumerate(blocks):
                x = block(x, h, w)
                if j == 0:
                    x = self.pos_block[i](x, h, w)
            if i < last:
                x = x.reshape(b, h, w, -1).permute(0, 3, 1, 2)
        x = self.norm(x)
        # the mean over tokens, as a 4-D global average pool (what XNNPACK delegates)
        x = x.transpose(1, 2).reshape(b, self.num_features, h, w).mean((2, 3), keepdim=True).flatten(1)
        return self.head(x)

    @torch.no_grad()
    def fuse(self) -> "SepViT":
        """Fold the final LayerNorm's affine into the head (it commutes with the mean over tokens); the caller's
        walk (on a copy) fuses the rest."""
        norm = self.norm
        if isinstance(norm, nn.LayerNorm):
            self.head = fold_affine_into_linear(norm, self.head)
            self.norm = LayerNormDeploy(norm.normalized_shape[0], norm.eps, like=norm.weight)
        return self


def _init_weights(m: nn.Module) -> None:
    """The authors' initialisation: normal linears (std 0.02), unit LayerNorms, fan-out normal convs. Their
    timm ``trunc_normal_(std=.02)`` truncates at +-2 absolute, 100 standard deviations: the plain normal is the
    same distribution and draws several times faster (B has 82M weights, drawn again on every checkpoint load)."""
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


# ------------------------------------------------------------------------------------------------ deploy


@torch.no_grad()
def fold_affine_into_linear(norm: nn.LayerNorm, linear: nn.Linear) -> nn.Linear:
    """``linear(x_hat * g + b)`` as one Linear of ``x_hat``: weight ``W * g``, bias ``W @ b + bias``."""
    out = nn.Linear(linear.in_features, linear.out_features, device=linear.weight.device, dtype=linear.weight.dtype)
    out.weight.copy_(linear.weight * norm.weight[None, :])
    out.bias.copy_(linear.weight @ norm.bias + (linear.bias if linear.bias is not None else 0.0))
    return out


@torch.no_grad()
def scaled_rows(linear: nn.Linear, rows: int, scale: float) -> nn.Linear:
    """A copy of ``linear`` with its first ``rows`` outputs (the queries) times ``scale``: ``(s q) k^T`` is
    ``s (q k^T)``, so the attention scale costs nothing at run time."""
    out = copy.deepcopy(linear)
    out.weight[:rows].mul_(scale)
    if out.bias is not None:
        out.bias[:rows].mul_(scale)
    return out


class LayerNormDeploy(nn.Module):
    """LayerNorm over the last dim in ops every mobile runtime delegates (ExecuTorch's XNNPACK partitioner leaves
    ``native_layer_norm`` on portable kernels): the channel means are a Linear with weights 1/C (``mean.dim``
    reaches XNNPACK only as a 4-D spatial pool), the biased variance the same of the squared deviations, plus eps
    as that Linear's bias, then ``rsqrt``. The deviations are scaled by :data:`~shvit_edge.models.shvit.NORM_SCALE`
    (a power of two: the same function, in float32 the same bits) before they are squared, for float16 headroom
    as in SHViT's deploy GroupNorm. ``weight`` / ``bias``: the affine, if it is not folded elsewhere; ``like``: a
    tensor of the dtype and device to build the constants in (default: the weight's)."""

    def __init__(self, dim: int, eps: float, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                 like: torch.Tensor | None = None):
        super().__init__()
        self.eps = eps
        like = weight if like is None else like
        kwargs = {"dtype": like.dtype, "device": like.device} if like is not None else {}
        self.register_buffer("channel_mean", torch.full((1, dim), 1.0 / dim, **kwargs), persistent=False)
        self.register_buffer("eps_bias", torch.full((1,), eps * NORM_SCALE ** 2, **kwargs), persistent=False)
        self.weight = nn.Parameter(weight.detach().clone()) if weight is not None else None
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None

    @classmethod
    def of(cls, norm: nn.LayerNorm) -> "LayerNormDeploy":
        """The deploy form of ``norm``, its affine kept."""
        return cls(norm.normalized_shape[0], norm.eps, norm.weight, norm.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = (x - F.linear(x, self.channel_mean)) * NORM_SCALE
        x = d * torch.rsqrt(F.linear(d * d, self.channel_mean, self.eps_bias))
        if self.weight is not None:
            x = x * self.weight
        if self.bias is not None:
            x = x + self.bias
        return x


class SepViTBlockDeploy(nn.Module):
    """The fused SepViT block, the same function in ops every mobile runtime delegates.

    Folded: the attention scale into the query rows of ``DSA_qkv`` and ``PSA_qk``; ``norm2``'s affine into
    ``fc1``. The learned window tokens are constants: their ``norm1`` and DSA q/k/v rows are computed once
    (``token_qkv``, put in front of each window's rows) and so is their shortcut (``token_shortcut``).
    The LayerNorms are :class:`LayerNormDeploy`; heads are split by channel slices and permutes and the matmuls
    are 3-D ``bmm`` (XNNPACK leaves ``select``, ``split_with_sizes`` and a batched ``@``'s ``expand`` outside).
    """

    @torch.no_grad()
    def __init__(self, block: SepViTBlock):
        super().__init__()
        attn = block.attn
        c = attn.dim
        self.num_heads = attn.num_heads
        self.grid = block.grid
        self.do_PSA = block.do_PSA
        self.norm1 = LayerNormDeploy.of(block.norm1)
        self.qkv = scaled_rows(attn.DSA_qkv, c, attn.scale)
        if self.do_PSA:
            tokens = block.norm1(block.win_tokens.reshape(block.win_num, 1, c))
            self.register_buffer("token_qkv", self.qkv(tokens).contiguous())  # (windows, 1, 3C)
            self.register_buffer("token_shortcut", tokens.reshape(block.win_num, c).contiguous())  # (windows, C)
            self.token_norm = LayerNormDeploy.of(attn.win_tokens_norm)
            self.token_act = nn.GELU()
            self.psa_qk = scaled_rows(attn.PSA_qk, c, attn.scale)
        self.proj = copy.deepcopy(attn.proj)
        self.norm2 = LayerNormDeploy(c, block.norm2.eps, like=block.norm2.weight)
        self.fc1 = fold_affine_into_linear(block.norm2, block.mlp.fc1)
        self.act = nn.GELU()
        self.fc2 = copy.deepcopy(block.mlp.fc2)

    def _dsa(self, qkv: torch.Tensor) -> torch.Tensor:
        """Multi-head attention of ``(M, T, 3C)`` rows (q carries the scale) -> ``(M, T, C)``."""
        m, t, c3 = qkv.shape
        c = c3 // 3
        nh, hd = self.num_heads, c // self.num_heads
        q = qkv[:, :, :c].reshape(m, t, nh, hd).permute(0, 2, 1, 3).reshape(m * nh, t, hd)
        kt = qkv[:, :, c:2 * c].reshape(m, t, nh, hd).permute(0, 2, 3, 1).reshape(m * nh, hd, t)
        v = qkv[:, :, 2 * c:].reshape(m, t, nh, hd).permute(0, 2, 1, 3).reshape(m * nh, t, hd)
        out = torch.bmm(torch.bmm(q, kt).softmax(dim=-1), v)
        return out.reshape(m, nh, t, hd).permute(0, 2, 1, 3).reshape(m, t, c)

    def _separable(self, y: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """DSA within the windows (window tokens first), then PSA across them; raster order in and out."""
        b, n, c = y.shape
        g, nh, hd = self.grid, self.num_heads, c // self.num_heads
        wh, ww = window_shape(g, h, w)
        wn, t = g * g, wh * ww
        windows = y.reshape(b, g, wh, g, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b * wn, t, c)
        qkv = self.qkv(windows)  # (B * windows, T, 3C)
        # the window tokens' rows for every image: a batch of constants made from the batch's own rows (times 0,
        # plus the constant: exact), since XNNPACK leaves an op on constants alone (a cat repeating them b times)
        # or any expand outside its partition
        token_qkv = (qkv[:, :1] * 0.0).reshape(-1, wn, 1, 3 * c) + self.token_qkv
        out = self._dsa(torch.cat([token_qkv.reshape(-1, 1, 3 * c), qkv], dim=1)).reshape(b, wn, t + 1, c)
        tokens = out[:, :, :1].reshape(b, wn, c) + self.token_shortcut  # 3-D: TFLite takes no 4-D Linear
        feats = out[:, :, 1:] + windows.reshape(b, wn, t, c)
        qk = self.psa_qk(self.token_act(self.token_norm(tokens)))  # (B, windows, 2C)
        q = qk[:, :, :c].reshape(b, wn, nh, hd).permute(0, 2, 1, 3).reshape(b * nh, wn, hd)
        kt = qk[:, :, c:].reshape(b, wn, nh, hd).permute(0, 2, 3, 1).reshape(b * nh, hd, wn)
        v = feats.reshape(b, wn, t, nh, hd).permute(0, 3, 1, 2, 4).reshape(b * nh, wn, t * hd)
        mixed = torch.bmm(torch.bmm(q, kt).softmax(dim=-1), v)
        out = mixed.reshape(b, nh, wn, t, hd).permute(0, 2, 3, 1, 4).reshape(b, wn, t, c) + feats
        return out.reshape(b, g, g, wh, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b, n, c)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        y = self.norm1(x)
        mixed = self._separable(y, h, w) if self.do_PSA else self._dsa(self.qkv(y)) + y
        x = x + self.proj(mixed)
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


def reparameterize(model: SepViT, input_std: Sequence[float] | None = None) -> SepViT:
    """A fused copy of ``model`` in eval mode (``model`` untouched): every block into :class:`SepViTBlockDeploy`,
    each PEG's identity into its conv, the final LayerNorm's affine into the head, every LayerNorm into
    :class:`LayerNormDeploy`.

    ``input_std``: fold ``1/std`` per input channel into the first conv (exact: its zero padding is zero in both
    spaces), for inputs that subtract only the mean.
    """
    from ..errors import CheckFailed

    if not isinstance(model, nn.Module):
        raise TypeError(f"reparameterize takes an nn.Module, not {type(model).__name__}")
    fused = fuse_modules(copy.deepcopy(model).eval()).eval()
    leftover = [name for name, m in fused.named_modules() if isinstance(m, nn.LayerNorm)]
    if leftover:
        raise CheckFailed(f"reparameterization left {len(leftover)} LayerNorm layer(s) unconverted: "
                          f"{', '.join(leftover[:5])}{' ...' if len(leftover) > 5 else ''}")
    if input_std is not None:
        from .reparam import fold_input_std

        fold_input_std(fused, input_std)
    return fused
