"""shvit-edge: SHViT checkpoints to verified, benchmarked on-device artifacts.

The public API is small and stable; everything else is an implementation detail::

    import shvit_edge
    ckpt = shvit_edge.load_checkpoint("shvit_s1.pth")          # .model .variant .num_classes .layout ...
    deploy = shvit_edge.reparameterize(ckpt.model)             # BatchNorm folded away, same function
    fresh = shvit_edge.create_model("shvit_s2", num_classes=10)

Heavy dependencies (torch) load on first use, so ``import shvit_edge`` and the CLI start fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "load_checkpoint", "reparameterize", "VARIANTS", "get_variant",
           "LoadedCheckpoint", "ModelFamily", "register_family", "families", "get_family"]

_LAZY = {
    "create_model": ("shvit_edge.models.build", "create_model"),
    "load_checkpoint": ("shvit_edge.models.checkpoint", "load_checkpoint"),
    "LoadedCheckpoint": ("shvit_edge.models.checkpoint", "LoadedCheckpoint"),
    "reparameterize": ("shvit_edge.models.reparam", "reparameterize"),
    "VARIANTS": ("shvit_edge.models.variants", "VARIANTS"),
    "get_variant": ("shvit_edge.models.variants", "get_variant"),
    "ModelFamily": ("shvit_edge.models.family", "ModelFamily"),
    "register_family": ("shvit_edge.models.registry", "register_family"),
    "families": ("shvit_edge.models.registry", "families"),
    "get_family": ("shvit_edge.models.registry", "get_family"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'shvit_edge' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
