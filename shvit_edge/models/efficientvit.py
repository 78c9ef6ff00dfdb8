"""EfficientViT-M (Liu et al., "EfficientViT: Memory Efficient Vision Transformer with Cascaded Group Attention",
CVPR 2023): the training form in the authors' module structure, and its deploy form.

The module layout is the authors' (microsoft/Cream, ``EfficientViT/classification/model/efficientvit.py``):
``patch_embed.{0,2,4,6}``, ``blocks1..3`` (``blocksN.0`` / ``.1`` / ``.2`` of stages 2 and 3 are the subsample
block: residual depthwise conv + FFN, PatchMerging, residual depthwise conv + FFN), ``head`` (BN-Linear) and the
optional ``head_dist``, with ``Conv2d_BN``'s children ``c`` / ``bn``; so a state dict of the authors' code loads
key for key. timm's ``efficientvit_msra`` layout is remapped on load (:mod:`.efficientvit_family`). The building
blocks they share with SHViT (Conv-BN, BN-Linear, residual, FFN, PatchMerging with its squeeze-excite) are
SHViT's own classes, whose parameter names are the same: their fusion rules and the data-free quantization
pairs (:mod:`.dfq`) apply unchanged.

The authors' ``attention_bias_idxs`` buffers are not part of this model's state dict (they are a function of the
window size, rebuilt here); the family drops them from a checkpoint after checking them.

Resolutions. The authors' model is built for one input size (224: stage maps of 14, 7 and 4; the attention
window is ``min(7, map)``, so the bias tables cover 7x7, 7x7 and 4x4 windows) and asserts it at run time. At 224
this module computes exactly their function. At another size each stage attends within windows of its bias
table's size: a larger map is zero-padded to a multiple of the window and partitioned (the authors' rule), a map
no larger than the window attends over itself with the table's entries for its offsets.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .shvit import FFN, ConvNorm, NormLinear, PatchMerging, PooledHeads, Residual, fuse_modules, patchify_stem


def bias_index(h: int, w: int, table: int) -> torch.Tensor:
    """(h*w, h*w) indices into a ``table`` x ``table`` window's bias table for an h x w grid of tokens.

    The authors number the offsets ``(|dy|, |dx|)`` in the order they first meet them walking the table's
    window row by row; from the first token every offset appears in raster order, so offset (a, b) is
    entry ``a * table + b``."""
    points = list(itertools.product(range(h), range(w)))
    idx = [abs(p[0] - q[0]) * table + abs(p[1] - q[1]) for p in points for q in points]
    return torch.tensor(idx, dtype=torch.long).view(h * w, h * w)


def authors_bias_idxs(resolution: int) -> torch.Tensor:
    """The authors' ``attention_bias_idxs`` buffer for a window of ``resolution``, built as their code does."""
    points = list(itertools.product(range(resolution), range(resolution)))
    offsets: dict = {}
    idxs = []
    for p1 in points:
        for p2 in points:
            off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
            if off not in offsets:
                offsets[off] = len(offsets)
            idxs.append(offsets[off])
    return torch.tensor(idxs, dtype=torch.long).view(len(points), len(points))


class CascadedGroupAttention(nn.Module):
    """Cascaded group attention over one window: head i sees its channel chunk plus head i-1's output.

    Per head: 1x1 Conv-BN to q, k, v (key_dim, key_dim, d), a depthwise Conv-BN on q (kernel ``kernels[i]``),
    ``softmax(q^T k * scale + bias)``, the values weighted by it. The heads' outputs are concatenated and
    projected (ReLU, 1x1 Conv-BN). ``attention_biases``: one learned bias per head and offset ``(|dy|, |dx|)``
    within a ``resolution`` x ``resolution`` window.
    """

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float, resolution: int,
                 kernels: Sequence[int]):
        super().__init__()
        self.num_heads = num_heads
        self.scale = key_dim ** -0.5
        self.key_dim = key_dim
        self.d = int(attn_ratio * key_dim)
        self.resolution = resolution
        self.qkvs = nn.ModuleList(ConvNorm(dim // num_heads, key_dim * 2 + self.d) for _ in range(num_heads))
        self.dws = nn.ModuleList(ConvNorm(key_dim, key_dim, kernels[i], 1, kernels[i] // 2, groups=key_dim)
                                 for i in range(num_heads))
        self.proj = nn.Sequential(nn.ReLU(), ConvNorm(self.d * num_heads, dim, bn_weight_init=0.0))
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution * resolution))
        self._index: dict[tuple[int, int], torch.Tensor] = {}

    def biases(self, h: int, w: int) -> torch.Tensor:
        """(heads, h*w, h*w): the bias of every query-key pair of an h x w window."""
        if (h, w) not in self._index:
            self._index[(h, w)] = bias_index(h, w, self.resolution)
        return self.attention_biases[:, self._index[(h, w)].to(self.attention_biases.device)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        biases = self.biases(h, w)
        feats_in = x.chunk(self.num_heads, dim=1)
        feats_out = []
        feat = feats_in[0]
        for i, qkv in enumerate(self.qkvs):
            if i > 0:
                feat = feat + feats_in[i]
            q, k, v = qkv(feat).split([self.key_dim, self.key_dim, self.d], dim=1)
            q = self.dws[i](q)
            q, k, v = q.flatten(2), k.flatten(2), v.flatten(2)
            attn = ((q.transpose(-2, -1) @ k) * self.scale + biases[i]).softmax(dim=-1)
            feat = (v @ attn.transpose(-2, -1)).view(b, self.d, h, w)
            feats_out.append(feat)
        return self.proj(torch.cat(feats_out, 1))

    @torch.no_grad()
    def fuse(self) -> "CascadedGroupAttentionDeploy":
        return CascadedGroupAttentionDeploy(self)


class CascadedGroupAttentionDeploy(nn.Module):
    """The fused cascaded group attention, in ops every mobile runtime delegates.

    BatchNorms folded into their convs; the attention scale folded into each q depthwise conv (``dws(q) * s``
    is the conv with weight and bias times ``s``); each head's biases gathered once, for a full window, into
    a constant ``(N, N)`` buffer (``bias_i``), so nothing is indexed at run time. The channel chunks and the
    q/k/v split are slices (XNNPACK leaves ``split_with_sizes`` on portable kernels), the matmuls ``bmm``.
    A map smaller than the window takes its rows and columns of the full window's constant (static slices of
    a constant; at the default resolution every window is full and this never happens).
    """

    @torch.no_grad()
    def __init__(self, attn: CascadedGroupAttention):
        super().__init__()
        self.num_heads = attn.num_heads
        self.key_dim = attn.key_dim
        self.d = attn.d
        self.resolution = attn.resolution
        self.qkvs = nn.ModuleList(q.fuse() if isinstance(q, ConvNorm) else q for q in attn.qkvs)
        dws = []
        for m in attn.dws:
            conv = m.fuse() if isinstance(m, ConvNorm) else m
            conv.weight.mul_(attn.scale)
            conv.bias.mul_(attn.scale)
            dws.append(conv)
        self.dws = nn.ModuleList(dws)
        self.proj = attn.proj  # the caller's walk fuses its ConvNorm
        r = attn.resolution
        full = attn.attention_biases.detach()[:, bias_index(r, r, r).to(attn.attention_biases.device)]
        for i in range(self.num_heads):
            self.register_buffer(f"bias_{i}", full[i].clone().contiguous())

    def _bias(self, i: int, h: int, w: int) -> torch.Tensor:
        bias = getattr(self, f"bias_{i}")
        r = self.resolution
        if (h, w) == (r, r):
            return bias
        return bias.view(r, r, r, r)[:h, :w, :h, :w].reshape(h * w, h * w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n, kd, d = h * w, self.key_dim, self.d
        chunk = c // self.num_heads
        feats_out = []
        feat = x[:, :chunk]
        for i in range(self.num_heads):
            if i > 0:
                feat = feat + x[:, i * chunk:(i + 1) * chunk]
            qkv = self.qkvs[i](feat)
            q = self.dws[i](qkv[:, :kd]).reshape(b, kd, n)  # q carries the scale
            k = qkv[:, kd:2 * kd].reshape(b, kd, n)
            v = qkv[:, 2 * kd:].reshape(b, d, n)
            attn = (torch.bmm(q.transpose(1, 2), k) + self._bias(i, h, w)).softmax(dim=-1)
            feat = torch.bmm(v, attn.transpose(1, 2)).reshape(b, d, h, w)
            feats_out.append(feat)
        return self.proj(torch.cat(feats_out, 1))


class LocalWindowAttention(nn.Module):
    """Cascaded group attention within local windows of the bias table's size (``attn``).

    ``window_resolution`` is the configured window (7); the attention's window is ``min(7, resolution)``,
    ``resolution`` being the stage's map side at the model's ``img_size`` (the authors' rule). A map larger
    than the window is zero-padded at the bottom and right to a multiple of it and partitioned; the rest
    attends over the whole map.
    """

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float, resolution: int,
                 window_resolution: int, kernels: Sequence[int]):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.resolution = resolution
        self.window_resolution = window_resolution
        self.attn: nn.Module = CascadedGroupAttention(dim, key_dim, num_heads, attn_ratio,
                                                      min(window_resolution, resolution), kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        win = self.attn.resolution
        if h <= win and w <= win:
            return self.attn(x)
        pad_b, pad_r = (win - h % win) % win, (win - w % win) % win
        if pad_b or pad_r:
            x = F.pad(x, (0, pad_r, 0, pad_b))
        ph, pw = h + pad_b, w + pad_r
        nh, nw = ph // win, pw // win
        # window partition in NCHW: B C (nH wh) (nW ww) -> (B nH nW) C wh ww, one permute each way
        x = x.reshape(b, c, nh, win, nw, win).permute(0, 2, 4, 1, 3, 5).reshape(b * nh * nw, c, win, win)
        x = self.attn(x)
        x = x.reshape(b, nh, nw, c, win, win).permute(0, 3, 1, 4, 2, 5).reshape(b, c, ph, pw)
        if pad_b or pad_r:
            x = x[:, :, :h, :w]
        return x


class EfficientViTBlock(nn.Module):
    """The sandwich block: residual depthwise conv and FFN, residual local window attention (type "s"),
    residual depthwise conv and FFN."""

    def __init__(self, block_type: str, ed: int, kd: int, nh: int, ar: float, resolution: int,
                 window_resolution: int, kernels: Sequence[int]):
        super().__init__()
        self.dw0 = Residual(ConvNorm(ed, ed, 3, 1, 1, groups=ed, bn_weight_init=0.0))
        self.ffn0 = Residual(FFN(ed, ed * 2))
        self.mixer: nn.Module = (Residual(LocalWindowAttention(ed, kd, nh, ar, resolution, window_resolution, kernels))
                                 if block_type == "s" else nn.Identity())
        self.dw1 = Residual(ConvNorm(ed, ed, 3, 1, 1, groups=ed, bn_weight_init=0.0))
        self.ffn1 = Residual(FFN(ed, ed * 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn1(self.dw1(self.mixer(self.ffn0(self.dw0(x)))))


class EfficientViT(PooledHeads, nn.Module):
    """The EfficientViT-M classifier: a 16x16 patch embedding of four stride-2 3x3 Conv-BNs, three stages
    (stages 2 and 3 begin with a subsample block), global average pooling, a BN-Linear head.

    With ``distillation=True`` a second head (``head_dist``) is trained; in eval mode the two heads' outputs are
    averaged, as in the authors' code. The fused (deploy) form has a single merged ``head``.
    """

    def __init__(self, embed_dim: Sequence[int], depth: Sequence[int], num_heads: Sequence[int],
                 kernels: Sequence[int], key_dim: Sequence[int] = (16, 16, 16),
                 window_size: Sequence[int] = (7, 7, 7), stages: Sequence[str] = ("s", "s", "s"),
                 img_size: int = 224, patch_size: int = 16, num_classes: int = 1000, distillation: bool = False,
                 in_chans: int = 3):
        super().__init__()
        if num_classes < 1:
            raise ValueError("num_classes must be at least 1")
        e0 = embed_dim[0]
        self.patch_embed = patchify_stem(in_chans, e0)
        resolution = img_size // patch_size
        blocks: list[list[nn.Module]] = [[], [], []]
        n = len(embed_dim)
        for i in range(n):
            ed, kd, nh = embed_dim[i], key_dim[i], num_heads[i]
            ar = ed / (kd * nh)
            for _ in range(depth[i]):
                blocks[i].append(EfficientViTBlock(stages[i], ed, kd, nh, ar, resolution, window_size[i], kernels))
            if i + 1 < n:  # the authors' down_ops: subsample by 2 after stages 1 and 2
                nxt = embed_dim[i + 1]
                blocks[i + 1].append(nn.Sequential(Residual(ConvNorm(ed, ed, 3, 1, 1, groups=ed)),
                                                   Residual(FFN(ed, ed * 2))))
                blocks[i + 1].append(PatchMerging(ed, nxt))
                resolution = (resolution - 1) // 2 + 1
                blocks[i + 1].append(nn.Sequential(Residual(ConvNorm(nxt, nxt, 3, 1, 1, groups=nxt)),
                                                   Residual(FFN(nxt, nxt * 2))))
        self.blocks1 = nn.Sequential(*blocks[0])
        self.blocks2 = nn.Sequential(*blocks[1])
        self.blocks3 = nn.Sequential(*blocks[2])
        self.num_classes = num_classes
        self.num_features = embed_dim[-1]
        self.head: nn.Module = NormLinear(self.num_features, num_classes)
        self.distillation = distillation
        if distillation:
            self.head_dist: nn.Module = NormLinear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks3(self.blocks2(self.blocks1(self.patch_embed(x))))

    def forward(self, x: torch.Tensor):
        return self.classify(self.forward_features(x))  # adaptive_avg_pool2d(x, 1)'s values, as a mean


_NORMS = (nn.modules.batchnorm._BatchNorm,)


def reparameterize(model: EfficientViT, input_std: Sequence[float] | None = None) -> EfficientViT:
    """A fused copy of ``model`` in eval mode (``model`` untouched): every Conv-BN into a Conv, BN-Linear into
    a Linear, each residual depthwise Conv-BN into one conv with the identity in its centre tap, each cascaded
    group attention into :class:`CascadedGroupAttentionDeploy`, two heads into one.

    ``input_std``: fold ``1/std`` per input channel into the first conv (exact: its zero padding is zero in both
    spaces), for inputs that subtract only the mean.
    """
    import copy

    from ..errors import CheckFailed

    if not isinstance(model, nn.Module):
        raise TypeError(f"reparameterize takes an nn.Module, not {type(model).__name__}")
    fused = fuse_modules(copy.deepcopy(model).eval()).eval()
    leftover = [name for name, m in fused.named_modules() if isinstance(m, _NORMS)]
    if leftover:
        raise CheckFailed(f"reparameterization left {len(leftover)} BatchNorm layer(s) unfused: "
                          f"{', '.join(leftover[:5])}{' ...' if len(leftover) > 5 else ''}")
    if input_std is not None:
        from .reparam import fold_input_std

        fold_input_std(fused, input_std)
    return fused
