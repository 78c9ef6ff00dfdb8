"""What a model family is: the base class every family subclasses (the registry is :mod:`.registry`).

A family (SHViT is the first: :mod:`shvit_edge.models.shvit_family`) is one module that subclasses
:class:`ModelFamily` and exposes an instance as ``FAMILY``. It owns its variants (with whatever fields it
needs), each variant's default resolution and preprocessing, how to build and reparameterize a model, and the
checkpoint layouts it reads (how to recognise each from a state dict's keys, and how to map its keys to the
model's own). The core (checkpoint loading, export, verify, bench, the CLI) only iterates the registry.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from ..errors import UsageError

#: ImageNet's channel statistics, which most image classifiers are trained with
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ModelFamily:
    """One family of models. Subclass it, set the class attributes, implement :meth:`variants`, :meth:`build`
    and :meth:`detect_layout`, and register an instance.

    Variant names are unique across families (a manifest names only the variant, and ``--variant`` takes it
    alone), so a family's names should carry its prefix (``shvit_s1``).
    """

    #: the registry key, recorded in every manifest (``"shvit"``)
    name: str = ""
    #: how messages name the family (``"SHViT"``)
    title: str = ""
    #: one sentence on what the models are, for artifacts' descriptions (Core ML's short description)
    description: str = ""
    #: preprocessing of every variant unless :meth:`preprocessing` says otherwise
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    #: the evaluation crop: resize the shorter side to size / crop_pct, centre-crop to size
    crop_pct: float = 0.875
    #: checkpoint key layouts this family reads (names as :meth:`detect_layout` returns them); the first is the
    #: model's own (``state_dict()``) layout
    layouts: tuple[str, ...] = ()
    #: the keys that identify a state dict as this family's, for the message when no family recognises one
    layout_hint: str = ""
    #: the per-variant columns the ``variants`` table shows after the common ones (keys of :meth:`describe`)
    table_columns: tuple[str, ...] = ()

    # -------------------------------------------------------------------------------------- variants

    def variants(self) -> Mapping[str, object]:
        """Registry name -> the family's own variant spec, in the order ``variants`` lists them."""
        raise NotImplementedError

    def normalize(self, name: str) -> str | None:
        """The registry name ``name`` stands for in this family (aliases, case), or None if it is not one."""
        key = name.strip().lower().replace("-", "_")
        return key if key in self.variants() else None

    def default_resolution(self, variant: str) -> int:
        """The side of the square input the variant is trained and evaluated at."""
        return 224

    def check_resolution(self, variant: str, resolution: tuple[int, int]) -> None:
        """Raise a :class:`~shvit_edge.errors.UsageError` naming the rule if the variant cannot take an (H, W)
        input (``parse_resolution`` has already checked the common rule: sides a multiple of 16, in bounds)."""

    def preprocessing(self, variant: str) -> tuple[tuple[float, ...], tuple[float, ...], float]:
        """(mean, std, crop_pct) of the variant's evaluation preprocessing."""
        return self.mean, self.std, self.crop_pct

    def describe(self, variant: str) -> dict:
        """The variant's own facts (JSON-friendly) that ``variants`` lists beside params and MACs."""
        mean, std, _ = self.preprocessing(variant)
        return {"mean": list(mean), "std": list(std)}

    # ---------------------------------------------------------------------------------------- models

    def build(self, variant: str, num_classes: int, distillation: bool):
        """A freshly initialised model of a registered variant (``variant`` is already normalized)."""
        raise NotImplementedError

    def create(self, variant: str, num_classes: int = 1000, distillation: bool = False):
        """A freshly initialised model of ``variant`` in eval mode, with ``.variant`` set to its name."""
        name = self.resolve(variant)
        if not isinstance(num_classes, int) or num_classes < 1:
            raise UsageError(f"num_classes must be a positive integer, got {num_classes!r}")
        model = self.build(name, num_classes, distillation)
        model.variant = name
        return model.eval()

    def untrained(self, variant: str, seed: int = 0, num_classes: int = 1000):
        """:meth:`create` with its initialisation drawn from ``seed``, reproducibly and without touching the
        global RNG, so a reference can be rebuilt later."""
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.create(variant, num_classes=num_classes)

    def reparameterize(self, model, input_std: Sequence[float] | None = None):
        """The deploy form: a new model, the same function (``model`` untouched). ``input_std``: fold 1/std
        per input channel into the first conv (for inputs that subtract only the mean)."""
        raise NotImplementedError

    def resolve(self, variant: str) -> str:
        name = self.normalize(variant) if isinstance(variant, str) else None
        if name is None:
            raise UsageError(f"unknown {self.title or self.name} variant {variant!r}; known variants: "
                             f"{', '.join(self.variants())}")
        return name

    # ----------------------------------------------------------------------------------- checkpoints

    def detect_layout(self, state: Mapping[str, object]) -> str | None:
        """The name of this family's key layout ``state`` (prefixes stripped) is in, or None if it is not
        this family's."""
        raise NotImplementedError

    def to_model_keys(self, state: dict, layout: str) -> dict:
        """``state`` (in ``layout``) with the keys of the model's own ``state_dict()``."""
        return state

    def from_model_keys(self, state: dict, layout: str) -> dict:
        """The inverse of :meth:`to_model_keys`: a model's state dict saved in ``layout``."""
        return state

    def key_namer(self, layout: str):
        """A function naming a model key the way a file in ``layout`` names it (for messages)."""
        return lambda key: key

    def head_facts(self, state: Mapping[str, object]) -> tuple[int, bool]:
        """(number of classes, has a distillation head) of a state dict in the model's own keys."""
        return 1000, False

    def layout_name(self, layout: str, container: str) -> str:
        """What :attr:`LoadedCheckpoint.layout` reports for a file in key layout ``layout`` held in
        ``container`` (``training-checkpoint``, ``state-dict``, ``safetensors``, ``module``)."""
        return layout

    def __repr__(self) -> str:
        return f"<model family {self.name!r}>"
