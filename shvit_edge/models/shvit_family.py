"""SHViT as a model family: everything the core needs to know about SHViT, and nothing it has to name.

Its variants are :data:`~shvit_edge.models.variants.VARIANTS` (S1-S4, named with the ``shvit_`` prefix), its
modules and fusion :mod:`~shvit_edge.models.shvit`, its deploy form
:func:`~shvit_edge.models.reparam.reparameterize`. Checkpoints come in two key layouts: the authors'
(``blocks1..3``, ``"official"``) and timm's (``stages.N.*``, the model's own, ``"timm"``).
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

from .family import ModelFamily
from .variants import VARIANTS


class ShvitFamily(ModelFamily):
    name = "shvit"
    title = "SHViT"
    description = "Single-Head Vision Transformer (Yun & Ro, CVPR 2024)"
    #: timm's evaluation crop for SHViT: resize the shorter side to size / 0.875, centre-crop to size
    crop_pct = 0.875
    layouts = ("timm", "official")
    layout_hint = "mixer.m.pre_norm with blocks1..3.* or stages.N.*"
    table_columns = ("embed_dim", "depth", "partial_dim")

    def variants(self):
        return VARIANTS

    def normalize(self, name: str) -> str | None:
        """Accept ``shvit_s1``, ``SHViT-S1``, ``s1``."""
        key = name.strip().lower().replace("-", "_")
        if not key.startswith("shvit_"):
            key = "shvit_" + key
        return key if key in VARIANTS else None

    def default_resolution(self, variant: str) -> int:
        return VARIANTS[self.resolve(variant)].resolution

    def preprocessing(self, variant: str):
        spec = VARIANTS[self.resolve(variant)]
        return spec.mean, spec.std, self.crop_pct

    def describe(self, variant: str) -> dict:
        spec = VARIANTS[self.resolve(variant)]
        return {"embed_dim": list(spec.embed_dim), "depth": list(spec.depth), "partial_dim": list(spec.partial_dim),
                "qk_dim": list(spec.qk_dim), "types": list(spec.types), "mean": list(spec.mean),
                "std": list(spec.std)}

    def build(self, variant: str, num_classes: int, distillation: bool):
        from .shvit import SHViT

        return SHViT(**VARIANTS[variant].arch, num_classes=num_classes, distillation=distillation)

    def reparameterize(self, model, input_std: Sequence[float] | None = None):
        from .reparam import reparameterize

        return reparameterize(model, input_std=input_std)

    def detect_layout(self, state: Mapping[str, object]) -> str | None:
        """The authors' (``blocks1..3``) or timm's (``stages.N``) layout, for a state dict with SHViT's own
        single-head attention (its ``mixer.m.pre_norm``, in every variant's later stages). Other families share
        the prefixes (EfficientViT both, MobileViTv2 timm's ``stages.N``), so the check is positive: what is not
        recognisably SHViT's is not claimed, whichever family is asked first."""
        if not any(".mixer.m.pre_norm." in k for k in state):
            return None
        if any(re.match(r"blocks[123]\.", k) for k in state):
            return "official"
        if any(k.startswith("stages.") for k in state):
            return "timm"
        return None

    def to_model_keys(self, state: dict, layout: str) -> dict:
        return remap_official_to_timm(state) if layout == "official" else state

    def from_model_keys(self, state: dict, layout: str) -> dict:
        return {timm_to_official_key(k): v for k, v in state.items()} if layout == "official" else state

    def key_namer(self, layout: str):
        return timm_to_official_key if layout == "official" else (lambda key: key)

    def head_facts(self, state: Mapping[str, object]) -> tuple[int, bool]:
        head = state.get("head.l.weight")
        shape = getattr(head, "shape", None)
        num_classes = int(shape[0]) if shape is not None and len(shape) == 2 else 1000
        return num_classes, any(k.startswith("head_dist.") for k in state)

    def layout_name(self, layout: str, container: str) -> str:
        """``"timm"``; ``"official"``: the authors' training checkpoint; ``"plain"``: a bare state dict in the
        authors' key layout (no training-checkpoint wrapper)."""
        if layout == "timm":
            return "timm"
        return "official" if container == "training-checkpoint" else "plain"


FAMILY = ShvitFamily()


_OFFICIAL_DOWNSAMPLE = {"0.0": "0", "0.1": "1", "1": "2", "2.0": "3", "2.1": "4"}
_OFFICIAL_RE = re.compile(r"^blocks([123])\.(\d+)((?:\.\d+)?)\.(.*)$")


def remap_official_to_timm(state: dict) -> dict:
    """The authors' ``blocks1..3`` keys in timm's layout.

    ``blocks1.j`` is stage 0's block j. For N = 2, 3, ``blocksN.0.0/.0.1/.1/.2.0/.2.1`` are stage N-1's
    downsample parts 0-4 and ``blocksN.j`` (j >= 3) its block j-3. Keys that fit none of these are kept
    as they are, so the strict comparison reports them.
    """
    return {official_to_timm_key(k): v for k, v in state.items()}


def official_to_timm_key(key: str) -> str:
    m = _OFFICIAL_RE.match(key)
    if not m:
        return key
    n, j, sub, rest = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)
    if n == 1:
        return f"stages.0.blocks.{j}{sub}.{rest}"
    if j >= 3:
        return f"stages.{n - 1}.blocks.{j - 3}{sub}.{rest}"
    part = _OFFICIAL_DOWNSAMPLE.get(f"{j}{sub}")
    return f"stages.{n - 1}.downsample.{part}.{rest}" if part is not None else key


_TIMM_RE = re.compile(r"^stages\.([012])\.(downsample|blocks)\.(\d+)\.(.*)$")
_TIMM_DOWNSAMPLE = {v: k for k, v in _OFFICIAL_DOWNSAMPLE.items()}


def timm_to_official_key(key: str) -> str:
    """The inverse of :func:`official_to_timm_key`, to name keys the way the user's file names them."""
    m = _TIMM_RE.match(key)
    if not m:
        return key
    stage, kind, idx, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
    if kind == "blocks":
        return f"blocks{stage + 1}.{idx + (3 if stage else 0)}.{rest}"
    part = _TIMM_DOWNSAMPLE.get(str(idx))
    return f"blocks{stage + 1}.{part}.{rest}" if stage and part is not None else key
