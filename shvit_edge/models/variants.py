"""The SHViT variants: each variant's architecture and deployment facts, declared once (the SHViT family,
:mod:`~shvit_edge.models.shvit_family`, serves them to the model family registry).

Parameter counts and MACs are not typed in anywhere: :func:`~shvit_edge.models.registry.count_params` and
:func:`~shvit_edge.models.registry.count_macs` measure them on a built (fused) model, so they cannot drift from
the code.
"""

from __future__ import annotations

from dataclasses import dataclass

from .family import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class VariantSpec:
    """One SHViT variant: its architecture (the model's constructor arguments) and preprocessing."""

    name: str
    embed_dim: tuple[int, int, int]
    depth: tuple[int, int, int]
    partial_dim: tuple[int, int, int]
    qk_dim: tuple[int, int, int] = (16, 16, 16)
    types: tuple[str, str, str] = ("i", "s", "s")
    resolution: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def arch(self) -> dict:
        """The architecture part, as :class:`~shvit_edge.models.shvit.SHViT` takes it."""
        return {"embed_dim": self.embed_dim, "depth": self.depth, "partial_dim": self.partial_dim,
                "qk_dim": self.qk_dim, "types": self.types}


# The authors' model/build.py (and timm's shvit.py, which agrees); S4 is trained and evaluated at 256.
VARIANTS: dict[str, VariantSpec] = {v.name: v for v in (
    VariantSpec("shvit_s1", embed_dim=(128, 224, 320), depth=(2, 4, 5), partial_dim=(32, 48, 68)),
    VariantSpec("shvit_s2", embed_dim=(128, 308, 448), depth=(2, 4, 5), partial_dim=(32, 66, 96)),
    VariantSpec("shvit_s3", embed_dim=(192, 352, 448), depth=(3, 5, 5), partial_dim=(48, 75, 96)),
    VariantSpec("shvit_s4", embed_dim=(224, 336, 448), depth=(4, 7, 6), partial_dim=(48, 72, 96), resolution=256),
)}


def normalize_variant_name(name: str) -> str:
    """Accept ``shvit_s1``, ``SHViT-S1``, ``s1``; return the registry key or raise a usage error."""
    from ..errors import UsageError

    key = name.strip().lower().replace("-", "_")
    if not key.startswith("shvit_"):
        key = "shvit_" + key
    if key not in VARIANTS:
        raise UsageError(f"unknown variant {name!r}; known variants: {', '.join(VARIANTS)}")
    return key


def get_variant(name: str) -> VariantSpec:
    return VARIANTS[normalize_variant_name(name)]


def find_variant(arch: dict) -> VariantSpec | None:
    """The registered variant whose architecture equals ``arch``, or None."""
    for spec in VARIANTS.values():
        if spec.arch == arch:
            return spec
    return None


def parse_resolution(value, default: int | None = None) -> tuple[int, int]:
    """``224``, ``"224"`` or ``"320x192"`` (height x width) -> (H, W); each side a multiple of 16, at least 64."""
    from ..errors import UsageError

    if value is None:
        if default is None:
            raise UsageError("a resolution is required")
        value = default
    if isinstance(value, (tuple, list)) and len(value) == 2:
        h, w = value
    elif isinstance(value, int):
        h = w = value
    else:
        text = str(value).strip().lower()
        parts = text.split("x")
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            raise UsageError(f"resolution {value!r} is not N or HxW (e.g. 224 or 320x192)") from None
        if len(nums) == 1:
            h = w = nums[0]
        elif len(nums) == 2:
            h, w = nums
        else:
            raise UsageError(f"resolution {value!r} is not N or HxW (e.g. 224 or 320x192)")
    from ..bounds import RESOLUTION_SIDE

    for side in (h, w):
        if isinstance(side, bool) or not isinstance(side, int) or RESOLUTION_SIDE.problem(side) or side % 16:
            raise UsageError(f"resolution {value!r}: each side must be a multiple of 16 from {RESOLUTION_SIDE.lo} "
                             f"to {RESOLUTION_SIDE.hi} px (the stem downsamples by 16 and the stages by 4 more)")
    return int(h), int(w)
