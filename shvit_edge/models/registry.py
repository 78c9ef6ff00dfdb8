"""The model family registry: register, look up, iterate; and the measurements every family gets.

The built-in families are the modules of :mod:`shvit_edge.models` whose names end in ``_family``, each
exposing its :class:`~shvit_edge.models.family.ModelFamily` instance as ``FAMILY``. They are found and imported
on the first lookup, not when this module is imported, so ``import shvit_edge`` and the CLI's start-up load no
model code, and adding a built-in family is adding its module. A family defined elsewhere (a plug-in, a test)
registers itself with :func:`register_family`, and :func:`unregister_family` takes it out again.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from pathlib import Path

from ..errors import UsageError
from ..plugins import import_defining_module, where_defined
from .family import ModelFamily

#: module names in this package that hold a built-in family
BUILTIN_SUFFIX = "_family"

_REGISTRY: dict[str, ModelFamily] = {}
_builtins_loaded = False


def register_family(family: ModelFamily) -> ModelFamily:
    """Register ``family`` (an instance); a name or variant name already taken is an error."""
    if not isinstance(family, ModelFamily):
        raise TypeError(f"register_family takes a ModelFamily instance, not {type(family).__name__}")
    if not family.name or not family.name.isidentifier():
        raise ValueError(f"a model family needs a plain name, got {family.name!r}")
    if family.name in _REGISTRY and _REGISTRY[family.name] is not family:
        raise ValueError(f"a model family named {family.name!r} is already registered")
    taken = {v: f.name for f in _REGISTRY.values() if f is not family for v in f.variants()}
    clash = [v for v in family.variants() if v in taken]
    if clash:
        raise ValueError(f"model family {family.name!r}: variant {clash[0]!r} is already {taken[clash[0]]!r}'s")
    _REGISTRY[family.name] = family
    variant_stats.cache_clear()
    return family


def unregister_family(name: str) -> None:
    """Take a registered family out of the registry (a plug-in's or a test's)."""
    _REGISTRY.pop(name, None)
    variant_stats.cache_clear()


def builtin_family_modules() -> list[str]:
    """The modules of the built-in families, by name (nothing imported)."""
    here = Path(__file__).parent
    return sorted(f"{__package__}.{m.name}" for m in pkgutil.iter_modules([str(here)])
                  if m.name.endswith(BUILTIN_SUFFIX))


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    # built-ins go first, whoever registered before the first lookup
    registered = dict(_REGISTRY)
    _REGISTRY.clear()
    for module in builtin_family_modules():
        register_family(importlib.import_module(module).FAMILY)
    for family in registered.values():
        register_family(family)


def families() -> tuple[ModelFamily, ...]:
    """Every registered family, the built-in ones first."""
    _load_builtins()
    return tuple(_REGISTRY.values())


def get_family(name: str) -> ModelFamily:
    _load_builtins()
    if name not in _REGISTRY:
        raise UsageError(f"unknown model family {name!r}; known families: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def family_ref(family: ModelFamily) -> dict:
    """What another process needs to find ``family``: its name, and the module (name and file) that defines it,
    for a family registered from outside the built-ins (a plug-in's, a test's). JSON-friendly."""
    return {"name": family.name, **where_defined(family)}


def find_family(ref: dict | str) -> ModelFamily:
    """The family :func:`family_ref` describes (or named by ``ref``): the registered one, else the one its
    defining module holds (imported by name, or from its file), registered here."""
    name = ref if isinstance(ref, str) else ref["name"]
    _load_builtins()
    if name in _REGISTRY or isinstance(ref, str) or not ref.get("module"):
        return get_family(name)
    module = import_defining_module(ref)
    if name not in _REGISTRY:  # importing it may have registered it
        found = [v for v in vars(module).values() if isinstance(v, ModelFamily) and v.name == name]
        if found:
            register_family(found[0])
    return get_family(name)


def resolve_variant(name: str) -> tuple[ModelFamily, str]:
    """(family, registry name) of a variant name given in any of its family's accepted spellings
    (``"shvit_s1"``, ``"SHViT-S1"``, ``"s1"``); an unknown name is a usage error listing every variant."""
    if isinstance(name, str):
        for family in families():
            key = family.normalize(name)
            if key is not None:
                return family, key
    known = ", ".join(v for f in families() for v in f.variants())
    raise UsageError(f"unknown variant {name!r}; known variants: {known}")


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model, resolution: tuple[int, int], in_chans: int = 3) -> int:
    """Multiply-accumulates of one forward pass at batch 1: convs, linears and the attention matmuls.

    Measured with torch's ``FlopCounterMode`` (which reports 2 FLOPs per MAC for those ops).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, in_chans, *resolution)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    return counter.get_total_flops() // 2


def measure(family: ModelFamily, variant: str, num_classes: int = 1000,
            resolution: tuple[int, int] | None = None) -> dict:
    """Parameters and MACs (one image) of the deploy form of a freshly built ``variant``: the work every
    runtime does, whatever it fuses. ``resolution``: (H, W); default the variant's."""
    name = family.resolve(variant)
    side = family.default_resolution(name)
    fused = family.reparameterize(family.create(name, num_classes=num_classes))
    return {"params": count_params(fused), "macs": count_macs(fused, tuple(resolution or (side, side)))}


@functools.lru_cache(maxsize=None)
def variant_stats(name: str, resolution: tuple[int, int] | None = None) -> dict:
    """Fused parameter count and MACs of a registered variant (1000 classes), measured on a built model."""
    family, key = resolve_variant(name)
    return measure(family, key, resolution=resolution)
