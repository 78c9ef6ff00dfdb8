"""SepViT as a model family (Li et al., "SepViT: Separable Vision Transformer", 2022; liwei109/SepViT).

Variants ``sepvit_lite``, ``sepvit_t``, ``sepvit_s``, ``sepvit_b``, their architectures as the authors'
``classification/sepvit.py`` declares them (``SepViT_Lite``, ``_Tiny``, ``_Small``, ``_Base``; Lite is in their
file but not in the paper's table): 224 px, ImageNet mean/std, the 0.875 centre crop of their evaluation
(``datasets.py`` resizes to 256/224 of the crop, bicubic, then centre-crops). Modules and deploy form:
:mod:`.sepvit`.

Checkpoints come in one key layout, the authors' (the model's own, ``"sepvit"``: ``patch_embeds.i``,
``pos_block.i``, ``blocks.i.j.attn.DSA_qkv``, ...), usually inside their training checkpoint's ``model`` entry
(the checkpoint loader unwraps it). timm has no SepViT.

Resolutions: sides a multiple of 32 (:meth:`SepViTFamily.check_resolution`; why: :mod:`.sepvit`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from ..errors import UsageError
from .family import IMAGENET_MEAN, IMAGENET_STD, ModelFamily


@dataclass(frozen=True)
class SepViTSpec:
    """One SepViT variant, as the authors' ``sepvit.py`` configures it."""

    name: str
    embed_dims: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    #: each block's window side at 224, per stage (the authors' ``ws``)
    window_sizes: tuple[tuple[int, ...], ...]
    mlp_ratios: tuple[int, int, int, int] = (4, 4, 4, 4)
    patch_size: int = 7
    img_size: int = 224

    @property
    def arch(self) -> dict:
        """The constructor arguments of :class:`~shvit_edge.models.sepvit.SepViT`."""
        return {"embed_dims": self.embed_dims, "num_heads": self.num_heads, "depths": self.depths,
                "window_sizes": self.window_sizes, "mlp_ratios": self.mlp_ratios, "qkv_bias": True,
                "patch_size": self.patch_size}

    @property
    def grids(self) -> tuple[tuple[int, ...], ...]:
        """Each block's windows per side (its learned window tokens are ``grid**2``; 1: attends over the map)."""
        from .sepvit import TRAINED_MAP

        return tuple(tuple((TRAINED_MAP >> k) // ws for ws in stage) for k, stage in enumerate(self.window_sizes))

    @property
    def side_multiple(self) -> int:
        """The multiple of which every input side must be: stage k's map (side / 2**(k+2)) divides by the grids
        of its blocks."""
        return math.lcm(*(g << (k + 2) for k, stage in enumerate(self.grids) for g in stage))


_SHORT = ((7,), (7, 14), (7, 14) * 3, (7, 7))
_LONG = ((7,), (7, 14), (7, 14) * 7, (7, 7))

# liwei109/SepViT classification/sepvit.py: SepViT_Lite, SepViT_Tiny, SepViT_Small, SepViT_Base
VARIANTS: dict[str, SepViTSpec] = {v.name: v for v in (
    SepViTSpec("sepvit_lite", (32, 64, 128, 256), (1, 2, 4, 8), (1, 2, 6, 2), _SHORT),
    SepViTSpec("sepvit_t", (96, 192, 384, 768), (3, 6, 12, 24), (1, 2, 6, 2), _SHORT),
    SepViTSpec("sepvit_s", (96, 192, 384, 768), (3, 6, 12, 24), (1, 2, 14, 2), _LONG),
    SepViTSpec("sepvit_b", (128, 256, 512, 1024), (4, 8, 16, 32), (1, 2, 14, 2), _LONG),
)}

#: the suffixes a name may carry after ``sepvit``: ours, and the authors' (``SepViT_Tiny``)
_ALIASES = {"lite": "lite", "t": "t", "tiny": "t", "s": "s", "small": "s", "b": "b", "base": "b"}


class SepViTFamily(ModelFamily):
    name = "sepvit"
    title = "SepViT"
    description = ("SepViT, separable vision transformer: depthwise self-attention within windows, pointwise "
                   "self-attention across them through window tokens (Li et al., 2022)")
    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    crop_pct = 0.875
    layouts = ("sepvit",)
    layout_hint = "patch_embeds.i.* with blocks.i.j.attn.DSA_qkv.*"
    table_columns = ("embed_dims", "depths", "num_heads")

    def variants(self):
        return VARIANTS

    def normalize(self, name: str) -> str | None:
        """Accept ``sepvit_t``, ``SepViT-T``, ``sepvit-tiny``, ``SepViT_Tiny`` (the authors' name), ``sepvitt``;
        the ``sepvit`` prefix is required (a bare ``t`` or ``tiny`` names no family)."""
        key = name.strip().lower().replace("-", "_")
        if not key.startswith("sepvit"):
            return None
        suffix = _ALIASES.get(key[len("sepvit"):].lstrip("_"))
        return f"sepvit_{suffix}" if suffix is not None else None

    def default_resolution(self, variant: str) -> int:
        return VARIANTS[self.resolve(variant)].img_size

    def check_resolution(self, variant: str, resolution: tuple[int, int]) -> None:
        spec = VARIANTS[self.resolve(variant)]
        multiple = spec.side_multiple
        if any(side % multiple for side in resolution):
            h, w = resolution
            grids = "; ".join(f"stage {k + 1}: {' and '.join(f'{g}x{g}' for g in sorted(set(stage), reverse=True))}"
                              for k, stage in enumerate(spec.grids) if max(stage) > 1)
            raise UsageError(
                f"{self.title} takes sides that are a multiple of {multiple} px, got {h}x{w}: its blocks learned one "
                f"token per window of a fixed grid of windows ({grids}), so each stage's map (side/4, /8, /16) must "
                f"split into its grids evenly; try {_nearest(h, multiple)}x{_nearest(w, multiple)}")

    def describe(self, variant: str) -> dict:
        spec = VARIANTS[self.resolve(variant)]
        return {"embed_dims": list(spec.embed_dims), "depths": list(spec.depths), "num_heads": list(spec.num_heads),
                "window_sizes": [list(s) for s in spec.window_sizes], "window_grids": [list(g) for g in spec.grids],
                "mlp_ratios": list(spec.mlp_ratios), "patch_size": spec.patch_size, "side_multiple": spec.side_multiple,
                **super().describe(variant)}

    def build(self, variant: str, num_classes: int, distillation: bool):
        from .sepvit import SepViT

        if distillation:
            raise UsageError("SepViT has no distillation head")
        return SepViT(**VARIANTS[variant].arch, num_classes=num_classes)

    def reparameterize(self, model, input_std: Sequence[float] | None = None):
        from .sepvit import reparameterize

        return reparameterize(model, input_std=input_std)

    # ----------------------------------------------------------------------------------- checkpoints

    def detect_layout(self, state: Mapping[str, object]) -> str | None:
        """The authors' keys: separable attention (``.attn.DSA_qkv.``) under ``blocks.i.j`` with ``patch_embeds.i``;
        SHViT's and EfficientViT's state dicts have neither."""
        if any(".attn.DSA_qkv." in k for k in state) and any(k.startswith("patch_embeds.") for k in state):
            return "sepvit"
        return None

    def head_facts(self, state: Mapping[str, object]) -> tuple[int, bool]:
        head = state.get("head.weight")
        shape = getattr(head, "shape", None)
        return (int(shape[0]) if shape is not None and len(shape) == 2 else 1000), False


FAMILY = SepViTFamily()


def _nearest(side: int, multiple: int) -> int:
    return max(multiple, round(side / multiple) * multiple)
