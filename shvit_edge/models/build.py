"""Building models of any registered family (SHViT's variants, or a :class:`VariantSpec` of one)."""

from __future__ import annotations

from .registry import resolve_variant
from .variants import VariantSpec


def create_model(variant, num_classes: int = 1000, distillation: bool = False):
    """A freshly initialised model of a registered variant, in eval mode.

    ``variant`` is a registry name of any family (``"shvit_s1"``, ``"s1"``) or an SHViT :class:`VariantSpec`.
    The weights are the family's initialisation (SHViT's: the authors', several residual branches start at
    zero); load a checkpoint for real use.
    """
    if isinstance(variant, VariantSpec):
        from ..errors import UsageError
        from .shvit import SHViT

        if not isinstance(num_classes, int) or num_classes < 1:
            raise UsageError(f"num_classes must be a positive integer, got {num_classes!r}")
        model = SHViT(**variant.arch, num_classes=num_classes, distillation=distillation)
        model.variant = variant.name
        return model.eval()
    family, name = resolve_variant(variant)
    return family.create(name, num_classes=num_classes, distillation=distillation)


def untrained_model(variant, seed: int = 0, num_classes: int = 1000):
    """The family's initialisation drawn from ``seed``, reproducibly and without touching the global RNG:
    the same seed always gives the same weights, so a reference can be rebuilt later."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model(variant, num_classes=num_classes)
