"""Building SHViT models from the variant registry."""

from __future__ import annotations

from .shvit import SHViT
from .variants import VariantSpec, get_variant


def create_model(variant: str | VariantSpec, num_classes: int = 1000, distillation: bool = False) -> SHViT:
    """A freshly initialised SHViT of a registered variant, in eval mode.

    ``variant`` is a registry name (``"shvit_s1"``, ``"s1"``) or a :class:`VariantSpec`. The weights are
    the authors' initialisation (several residual branches start at zero); load a checkpoint for real use.
    """
    spec = variant if isinstance(variant, VariantSpec) else get_variant(variant)
    if not isinstance(num_classes, int) or num_classes < 1:
        from ..errors import UsageError

        raise UsageError(f"num_classes must be a positive integer, got {num_classes!r}")
    model = SHViT(**spec.arch, num_classes=num_classes, distillation=distillation)
    model.variant = spec.name
    return model.eval()


def untrained_model(variant: str | VariantSpec, seed: int = 0, num_classes: int = 1000) -> SHViT:
    """The authors' initialisation drawn from ``seed``, reproducibly and without touching the global RNG:
    the same seed always gives the same weights, so a reference can be rebuilt later."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model(variant, num_classes=num_classes)
