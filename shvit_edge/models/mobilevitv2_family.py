"""MobileViTv2 as a model family (Mehta & Rastegari, TMLR 2023; apple/ml-cvnets, timm ``mobilevit.py``).

Variants ``mobilevitv2_050`` ... ``mobilevitv2_200`` (timm's names; ``MobileViTv2-1.0`` and the like are
accepted too): one architecture at seven width multipliers, built as timm's ``_mobilevitv2_cfg(multiplier)``
builds it. Stage widths ``int(c * m)`` of (64, 128, 256, 384, 512), stem ``int(32 * m)``, inverted residuals
expanding x2, transformer widths half their stage's, depths (2, 4, 3), 2x2 patches; timm rounds every width to
a multiple of 8, which leaves all of these unchanged. 256 px; preprocessing as timm's pretrained configs say
(``mobilevitv2_*.cvnets_in1k``): no mean or std (the network takes RGB in [0, 1]), ``crop_pct`` 0.888.
Modules and deploy form: :mod:`.mobilevitv2`.

Checkpoints: timm's key layout (``stem.conv``, ``stages.N.M.conv1_1x1``/``conv_kxk``/``transformer.K.attn.qkv_proj``
..., ``head.fc``), the model's own, ``"timm"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

from ..errors import UsageError
from .family import ModelFamily

#: timm's widths at multiplier 1.0 (``_mobilevitv2_cfg``): the five stages' outputs, and the stem's
BASE_CHANNELS = (64, 128, 256, 384, 512)
BASE_STEM = 32
#: transformer blocks in the MobileViTv2 blocks of stages 2, 3, 4
TRANSFORMER_DEPTHS = (2, 4, 3)
#: the 2x2 patches of every MobileViTv2 block
PATCH_SIZE = 2
#: what an input side must be a multiple of: stage 4's map (1/32 of the input) is unfolded into 2x2 patches
SIDE_MULTIPLE = 64


@dataclass(frozen=True)
class MobileViTv2Spec:
    """One MobileViTv2 width, as timm's ``_mobilevitv2_cfg(multiplier)`` configures it."""

    name: str
    multiplier: float
    img_size: int = 256

    @property
    def stem(self) -> int:
        return int(BASE_STEM * self.multiplier)

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(int(c * self.multiplier) for c in BASE_CHANNELS)

    @property
    def transformer_dims(self) -> tuple[int, ...]:
        """Half the width of stages 2, 3 and 4 (timm's ``transformer_br=0.5``)."""
        return tuple(c // 2 for c in self.channels[2:])

    @property
    def arch(self) -> dict:
        """The constructor arguments of :class:`~shvit_edge.models.mobilevitv2.MobileViTv2`."""
        return {"stem_ch": self.stem, "channels": self.channels, "transformer_dims": self.transformer_dims,
                "transformer_depths": TRANSFORMER_DEPTHS, "patch_size": PATCH_SIZE}


VARIANTS: dict[str, MobileViTv2Spec] = {v.name: v for v in (
    MobileViTv2Spec("mobilevitv2_050", 0.5),
    MobileViTv2Spec("mobilevitv2_075", 0.75),
    MobileViTv2Spec("mobilevitv2_100", 1.0),
    MobileViTv2Spec("mobilevitv2_125", 1.25),
    MobileViTv2Spec("mobilevitv2_150", 1.5),
    MobileViTv2Spec("mobilevitv2_175", 1.75),
    MobileViTv2Spec("mobilevitv2_200", 2.0),
)}

#: ``MobileViTv2-1.0`` / ``mobilevitv2_1.0`` / ``mobilevitv2-1`` (the paper's and ml-cvnets' spelling)
_MULTIPLIER_RE = re.compile(r"^mobilevit_?v2[_-](\d+(?:\.\d+)?)$")
#: a key only timm's MobileViTv2 layout has: a separable self-attention's projection inside a transformer
_TIMM_KEY_RE = re.compile(r"^stages\.\d+\.\d+\.transformer\.\d+\.attn\.qkv_proj\.weight$")


class MobileViTv2Family(ModelFamily):
    name = "mobilevitv2"
    title = "MobileViTv2"
    description = ("MobileViTv2, mobile vision transformer with separable self-attention "
                   "(Mehta & Rastegari, TMLR 2023)")
    #: timm's pretrained configs (``mobilevitv2_*.cvnets_in1k``): inputs in [0, 1], no normalization
    mean = (0.0, 0.0, 0.0)
    std = (1.0, 1.0, 1.0)
    crop_pct = 0.888
    layouts = ("timm",)
    layout_hint = "stages.N.M.transformer.K.attn.qkv_proj.*"
    table_columns = ("width_multiplier", "channels", "transformer_dims")

    def variants(self):
        return VARIANTS

    def normalize(self, name: str) -> str | None:
        """Accept ``mobilevitv2_100``, ``MobileViTv2-1.0``, ``mobilevitv2_1.0``, ``MobileViTv2-0.75``."""
        key = name.strip().lower().replace("-", "_")
        if key in VARIANTS:
            return key
        m = _MULTIPLIER_RE.match(name.strip().lower())
        if m is None:
            return None
        multiplier = float(m.group(1))
        return next((v.name for v in VARIANTS.values() if v.multiplier == multiplier), None)

    def default_resolution(self, variant: str) -> int:
        return VARIANTS[self.resolve(variant)].img_size

    def check_resolution(self, variant: str, resolution: tuple[int, int]) -> None:
        """Sides must be multiples of 64: the MobileViTv2 blocks unfold the maps at 1/8, 1/16 and 1/32 of the
        input into 2x2 patches, and the last of them is even only then (timm resizes other maps bilinearly,
        which this model does not export)."""
        h, w = resolution
        if h % SIDE_MULTIPLE or w % SIDE_MULTIPLE:
            raise UsageError(f"{self.resolve(variant)} takes resolutions whose sides are multiples of "
                             f"{SIDE_MULTIPLE}, got {h}x{w}: its MobileViTv2 blocks split the 1/32-scale map into "
                             "2x2 patches (e.g. 256, 320, 384 or 256x320)")

    def describe(self, variant: str) -> dict:
        spec = VARIANTS[self.resolve(variant)]
        return {"width_multiplier": spec.multiplier, "stem": spec.stem, "channels": list(spec.channels),
                "transformer_dims": list(spec.transformer_dims), "transformer_depths": list(TRANSFORMER_DEPTHS),
                "patch_size": PATCH_SIZE, **super().describe(variant)}

    def build(self, variant: str, num_classes: int, distillation: bool):
        from .mobilevitv2 import MobileViTv2

        if distillation:
            raise UsageError("MobileViTv2 has no distillation head")
        return MobileViTv2(**VARIANTS[variant].arch, num_classes=num_classes)

    def reparameterize(self, model, input_std: Sequence[float] | None = None):
        from .mobilevitv2 import reparameterize

        return reparameterize(model, input_std=input_std)

    # ----------------------------------------------------------------------------------- checkpoints

    def detect_layout(self, state: Mapping[str, object]) -> str | None:
        """timm's layout, recognised by its separable self-attention (``...transformer.K.attn.qkv_proj``),
        which neither SHViT's nor EfficientViT's layouts have."""
        return "timm" if any(_TIMM_KEY_RE.match(k) for k in state) else None

    def head_facts(self, state: Mapping[str, object]) -> tuple[int, bool]:
        head = state.get("head.fc.weight")
        shape = getattr(head, "shape", None)
        return (int(shape[0]) if shape is not None and len(shape) == 2 else 1000), False


FAMILY = MobileViTv2Family()
