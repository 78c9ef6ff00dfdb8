"""EfficientViT-M as a model family (Liu et al., CVPR 2023; microsoft/Cream ``EfficientViT/classification``).

Variants ``efficientvit_m0`` ... ``efficientvit_m5`` (timm's names), their architectures as the authors'
``model/build.py`` (``EfficientViT_m0`` ... ``_m5``) and timm's ``efficientvit_msra.py`` declare them (the two
agree): 224 px, ImageNet mean/std, the 0.875 centre crop of both (the authors' DeiT-style evaluation resizes to
256/224 of the crop; timm's default ``crop_pct``). Modules and deploy form: :mod:`.efficientvit`.

Checkpoints come in two key layouts: the authors' (``blocks1..3``, ``Conv2d_BN`` children ``c``/``bn``, ``head.l``;
the model's own, ``"efficientvit"``), usually inside their training checkpoint's ``model`` entry (the checkpoint
loader unwraps it), and timm's (``stages.N.downsample.res1/patchmerge/res2``, ``stages.N.blocks``,
``patch_embed.convK``, ``conv``/``linear``; ``"timm"``). Both may carry ``attention_bias_idxs`` buffers (the
authors' always, timm's before it made them non-persistent): they are derived from the window size, checked
against it and dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

from .family import IMAGENET_MEAN, IMAGENET_STD, ModelFamily


@dataclass(frozen=True)
class EfficientViTSpec:
    """One EfficientViT-M variant, as the authors' ``build.py`` configures it."""

    name: str
    embed_dim: tuple[int, int, int]
    depth: tuple[int, int, int]
    num_heads: tuple[int, int, int]
    kernels: tuple[int, int, int, int]
    key_dim: tuple[int, int, int] = (16, 16, 16)
    window_size: tuple[int, int, int] = (7, 7, 7)
    img_size: int = 224

    @property
    def arch(self) -> dict:
        """The constructor arguments of :class:`~shvit_edge.models.efficientvit.EfficientViT`."""
        return {"embed_dim": self.embed_dim, "depth": self.depth, "num_heads": self.num_heads,
                "kernels": self.kernels, "key_dim": self.key_dim, "window_size": self.window_size,
                "img_size": self.img_size}


# microsoft/Cream EfficientViT/classification/model/build.py; timm efficientvit_msra.py has the same numbers.
VARIANTS: dict[str, EfficientViTSpec] = {v.name: v for v in (
    EfficientViTSpec("efficientvit_m0", (64, 128, 192), (1, 2, 3), (4, 4, 4), (5, 5, 5, 5)),
    EfficientViTSpec("efficientvit_m1", (128, 144, 192), (1, 2, 3), (2, 3, 3), (7, 5, 3, 3)),
    EfficientViTSpec("efficientvit_m2", (128, 192, 224), (1, 2, 3), (4, 3, 2), (7, 5, 3, 3)),
    EfficientViTSpec("efficientvit_m3", (128, 240, 320), (1, 2, 3), (4, 3, 4), (5, 5, 5, 5)),
    EfficientViTSpec("efficientvit_m4", (128, 256, 384), (1, 2, 3), (4, 4, 4), (7, 5, 3, 3)),
    EfficientViTSpec("efficientvit_m5", (192, 288, 384), (1, 3, 4), (3, 3, 4), (7, 5, 3, 3)),
)}


class EfficientViTFamily(ModelFamily):
    name = "efficientvit"
    title = "EfficientViT"
    description = ("EfficientViT-M, memory-efficient vision transformer with cascaded group attention "
                   "(Liu et al., CVPR 2023)")
    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    crop_pct = 0.875
    layouts = ("efficientvit", "timm")
    layout_hint = "attention_biases with blocks1..3.* or stages.N.*"
    table_columns = ("embed_dim", "depth", "num_heads")

    def variants(self):
        return VARIANTS

    def normalize(self, name: str) -> str | None:
        """Accept ``efficientvit_m0``, ``EfficientViT-M0``, ``EfficientViT_M0`` (the authors' spelling), ``m0``."""
        key = name.strip().lower().replace("-", "_")
        if not key.startswith("efficientvit_"):
            key = "efficientvit_" + key
        return key if key in VARIANTS else None

    def default_resolution(self, variant: str) -> int:
        return VARIANTS[self.resolve(variant)].img_size

    def describe(self, variant: str) -> dict:
        spec = VARIANTS[self.resolve(variant)]
        return {"embed_dim": list(spec.embed_dim), "depth": list(spec.depth), "num_heads": list(spec.num_heads),
                "kernels": list(spec.kernels), "key_dim": list(spec.key_dim), "window_size": list(spec.window_size),
                **super().describe(variant)}

    def build(self, variant: str, num_classes: int, distillation: bool):
        from .efficientvit import EfficientViT

        return EfficientViT(**VARIANTS[variant].arch, num_classes=num_classes, distillation=distillation)

    def reparameterize(self, model, input_std: Sequence[float] | None = None):
        from .efficientvit import reparameterize

        return reparameterize(model, input_std=input_std)

    # ----------------------------------------------------------------------------------- checkpoints

    def detect_layout(self, state: Mapping[str, object]) -> str | None:
        """Only a state dict with cascaded group attention (``attention_biases`` or ``.qkvs.``) is this family's:
        SHViT's layouts share the ``blocks1..3`` and ``stages.N`` prefixes."""
        if not any(k.endswith("attention_biases") or ".attn.qkvs." in k for k in state):
            return None
        if any(re.match(r"blocks[123]\.", k) for k in state):
            return "efficientvit"
        if any(k.startswith("stages.") for k in state):
            return "timm"
        return None

    def to_model_keys(self, state: dict, layout: str) -> dict:
        _check_bias_idxs(state)
        state = {k: v for k, v in state.items() if not k.endswith(_IDXS)}
        return {timm_to_authors_key(k): v for k, v in state.items()} if layout == "timm" else state

    def from_model_keys(self, state: dict, layout: str) -> dict:
        if layout == "timm":
            return {authors_to_timm_key(k): v for k, v in state.items()}
        return _with_bias_idxs(state)  # as the authors' code saves it

    def key_namer(self, layout: str):
        return authors_to_timm_key if layout == "timm" else (lambda key: key)

    def head_facts(self, state: Mapping[str, object]) -> tuple[int, bool]:
        head = state.get("head.l.weight")
        shape = getattr(head, "shape", None)
        num_classes = int(shape[0]) if shape is not None and len(shape) == 2 else 1000
        return num_classes, any(k.startswith("head_dist.") for k in state)


FAMILY = EfficientViTFamily()

_IDXS = "attention_bias_idxs"


def _check_bias_idxs(state: dict) -> None:
    """A stored ``attention_bias_idxs`` must be the one the window its biases cover implies: anything else is a
    model this code does not compute."""
    import torch

    from ..errors import CheckpointError
    from .efficientvit import authors_bias_idxs

    for key, idxs in state.items():
        if not key.endswith(_IDXS) or not isinstance(idxs, torch.Tensor):
            continue
        side = round(idxs.shape[0] ** 0.5) if idxs.ndim == 2 and idxs.shape[0] == idxs.shape[1] else 0
        if side * side != idxs.shape[0] or not torch.equal(idxs.long(), authors_bias_idxs(side)):
            raise CheckpointError(f"{key} (shape {list(idxs.shape)}) is not the attention bias index of a square "
                                  "window as EfficientViT builds it")


def _with_bias_idxs(state: dict) -> dict:
    from .efficientvit import authors_bias_idxs

    out = {}
    for key, value in state.items():
        out[key] = value
        if key.endswith("attention_biases"):
            side = round(value.shape[1] ** 0.5)
            out[key[:-len("attention_biases")] + _IDXS] = authors_bias_idxs(side)
    return out


# ------------------------------------------------------------------------------------- timm's key layout

_AUTHORS_DOWN = {"0": "res1", "1": "patchmerge", "2": "res2"}
_TIMM_DOWN = {v: k for k, v in _AUTHORS_DOWN.items()}
_AUTHORS_RE = re.compile(r"^blocks([123])\.(\d+)\.(.*)$")
_TIMM_RE = re.compile(r"^stages\.([012])\.(?:blocks\.(\d+)|downsample\.(res1|patchmerge|res2))\.(.*)$")


def _rename_leaf(key: str, table: dict) -> str:
    """The ``Conv2d_BN`` / ``BN_Linear`` child (the second-to-last name) renamed by ``table``."""
    parts = key.split(".")
    if len(parts) >= 2 and parts[-2] in table:
        parts[-2] = table[parts[-2]]
    return ".".join(parts)


def authors_to_timm_key(key: str) -> str:
    """An authors' key as timm's ``efficientvit_msra`` names it (the inverse of :func:`timm_to_authors_key`)."""
    key = _rename_leaf(key, {"c": "conv", "l": "linear"})
    m = re.match(r"^patch_embed\.([0246])\.(.*)$", key)
    if m:
        return f"patch_embed.conv{int(m.group(1)) // 2 + 1}.{m.group(2)}"
    m = _AUTHORS_RE.match(key)
    if not m:
        return key
    n, j, rest = int(m.group(1)), int(m.group(2)), m.group(3)
    if n == 1:
        return f"stages.0.blocks.{j}.{rest}"
    if j >= 3:
        return f"stages.{n - 1}.blocks.{j - 3}.{rest}"
    return f"stages.{n - 1}.downsample.{_AUTHORS_DOWN[str(j)]}.{rest}"


def timm_to_authors_key(key: str) -> str:
    """A timm key in the authors' layout: ``stages.0.blocks.j`` is ``blocks1.j``; for N = 1, 2
    ``stages.N.downsample.res1/patchmerge/res2`` are ``blocks{N+1}.0/1/2`` and ``stages.N.blocks.j`` is
    ``blocks{N+1}.{j+3}``; ``patch_embed.convK`` is ``patch_embed.{2K-2}``; ``conv``/``linear`` are ``c``/``l``.
    Keys that fit none of these are kept, so the strict comparison reports them."""
    key = _rename_leaf(key, {"conv": "c", "linear": "l"})
    m = re.match(r"^patch_embed\.conv([1234])\.(.*)$", key)
    if m:
        return f"patch_embed.{(int(m.group(1)) - 1) * 2}.{m.group(2)}"
    m = _TIMM_RE.match(key)
    if not m:
        return key
    stage, block, down, rest = int(m.group(1)), m.group(2), m.group(3), m.group(4)
    if block is not None:
        return f"blocks{stage + 1}.{int(block) + (3 if stage else 0)}.{rest}"
    if stage == 0:
        return key
    return f"blocks{stage + 1}.{_TIMM_DOWN[down]}.{rest}"
