"""The model an export (or a verify reference) is made from: a loaded or seeded model of a registered family,
its family, its labels and where it came from, with the deploy model and ``torch.export`` captures its users
share.

:func:`load_source` is the one way in: a checkpoint (any registered family's; the family is detected), a
variant name for a seeded untrained model, or both (the checkpoint must then be that variant).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..bounds import SEED
from ..errors import InputError, UsageError
from .family import ModelFamily
from .registry import count_macs, count_params, family_ref, find_family, get_family, resolve_variant


@dataclass(frozen=True)
class CheckpointRef:
    #: the path as given, or ``"untrained"``
    path: str
    sha256: str | None
    layout: str | None = None
    use_ema: bool = False
    #: the seed of an untrained model's initialisation, so a reference can be rebuilt
    seed: int | None = field(default=None, metadata=SEED.meta)


@dataclass
class ModelSource:
    """The model every target of one export run is made from, with the captures they share."""

    model: object  # the unfused model, eval mode
    variant: str
    num_classes: int
    distillation: bool
    checkpoint: CheckpointRef
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    labels: tuple[str, ...]
    labels_source: str
    untrained: bool
    #: the registered family the model is of (it builds, reparameterizes and preprocesses for it)
    family: ModelFamily = None
    _deploy: dict = field(default_factory=dict)
    _programs: dict = field(default_factory=dict)
    _measures: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.family is None:
            self.family = resolve_variant(self.variant)[0]

    @property
    def default_resolution(self) -> int:
        """The side of the square input the variant is trained and evaluated at."""
        return self.family.default_resolution(self.variant)

    def preprocessing(self) -> tuple[tuple[float, ...], tuple[float, ...], float]:
        """(mean, std, crop_pct) of the family's evaluation preprocessing for this variant."""
        _, _, crop_pct = self.family.preprocessing(self.variant)
        return self.mean, self.std, crop_pct

    def deploy_model(self, fold_std: bool = False, layout: str = "nchw", transforms: tuple[str, ...] = ()):
        """The reparameterized, export-friendly model, fused once per ``fold_std`` and shared. ``fold_std``:
        1/std folded into the first conv (for inputs that subtract only the mean); ``layout="nhwc"``: the same
        model behind a wrapper that takes NHWC and permutes inside; ``transforms``: data-free quantization
        transforms applied to it (:func:`~shvit_edge.models.dfq.apply`)."""
        key = (fold_std, tuple(transforms))
        if key not in self._deploy:
            if transforms:
                from .dfq import apply

                self._deploy[key] = apply(self.deploy_model(fold_std), self.model, transforms)
            else:
                self._deploy[key] = self.family.reparameterize(self.model,
                                                               input_std=self.std if fold_std else None)
        fused = self._deploy[key]
        if layout == "nhwc":
            from .deploy import ChannelsLastInput

            return ChannelsLastInput(fused).eval()
        return fused

    def measure(self, resolution: tuple[int, int]) -> dict:
        """Parameters and MACs (one image at ``resolution``) of the deploy model, measured once per resolution:
        the work every runtime does, whatever it fuses."""
        key = tuple(resolution)
        if key not in self._measures:
            fused = self.deploy_model()
            self._measures[key] = {"params": count_params(fused), "macs": count_macs(fused, key)}
        return self._measures[key]

    def exported_program(self, example, dynamic_batch: bool = False, transforms: tuple[str, ...] = ()):
        """``torch.export`` of the deploy model (with ``transforms``), captured once per input shape and shared;
        each caller gets its own copy, since lowering (ExecuTorch's, for one) rewrites the program it is given."""
        import copy

        import torch

        key = (tuple(example.shape), dynamic_batch, tuple(transforms))
        if key not in self._programs:
            dynamic = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
            if dynamic_batch and example.shape[0] == 1:  # batch 1 would specialise the dimension
                example = example.expand(2, *example.shape[1:]).contiguous()
            with torch.no_grad():
                self._programs[key] = torch.export.export(self.deploy_model(transforms=transforms), (example,),
                                                          dynamic_shapes=dynamic)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's own pytree deprecation, when copying
            return copy.deepcopy(self._programs[key])

    def __getstate__(self) -> dict:
        """Pickled for an export worker process: the weights travel as safetensors bytes (no pickled tensors,
        no shared memory), the family by name (the worker looks it up in its registry), the captures stay
        behind (each process makes its own)."""
        from safetensors.torch import save

        state = dict(self.__dict__, _deploy={}, _programs={}, family=family_ref(self.family))
        weights = {k: v.detach().contiguous() for k, v in self.model.state_dict().items()}
        state["model"] = (self.variant, self.num_classes, self.distillation, save(weights))
        return state

    def __setstate__(self, state: dict) -> None:
        from safetensors.torch import load

        family = find_family(state["family"])
        variant, num_classes, distillation, weights = state["model"]
        model = family.create(variant, num_classes=num_classes, distillation=distillation)
        model.load_state_dict(load(weights), strict=True)
        self.__dict__.update(state, model=model.eval(), family=family)


def load_source(*, variant: str | None, checkpoint: str | None, use_ema: bool = False,
                trust_checkpoint: bool = False, labels_file: str | None = None, seed: int = 0) -> ModelSource:
    """The model of ``checkpoint`` (its family and variant detected; ``variant``, if given, must match), or
    without one a ``seed``-ed untrained model of ``variant``."""
    if checkpoint is None and variant is None:
        raise UsageError("give --variant, --checkpoint or both")
    SEED.check("--seed", seed)
    if checkpoint is not None:
        from .checkpoint import load_checkpoint

        loaded = load_checkpoint(checkpoint, variant=variant, use_ema=use_ema, trust_checkpoint=trust_checkpoint)
        family = get_family(loaded.family)
        model, name, num_classes, distillation = loaded.model, loaded.variant, loaded.num_classes, \
            loaded.distillation
        # resolved: a manifest's relative path would mean another file from another folder
        ref = CheckpointRef(path=str(Path(checkpoint).resolve()), sha256=loaded.sha256, layout=loaded.layout,
                            use_ema=use_ema)
        untrained = False
    else:
        if use_ema:
            raise UsageError("--ema needs --checkpoint")
        family, name = resolve_variant(variant)
        model, num_classes, distillation = family.untrained(name, seed=seed), 1000, False
        ref = CheckpointRef(path="untrained", sha256=None, seed=seed)
        untrained = True
    mean, std, _ = family.preprocessing(name)
    labels, labels_source = read_labels(labels_file, num_classes)
    return ModelSource(model=model, variant=name, num_classes=num_classes, distillation=distillation,
                       checkpoint=ref, mean=tuple(mean), std=tuple(std), labels=labels,
                       labels_source=labels_source, untrained=untrained, family=family)


def read_labels(labels_file: str | None, num_classes: int) -> tuple[tuple[str, ...], str]:
    """(labels, where they came from): the file's lines, else ImageNet-1k's names for 1000 classes, else the
    class indices."""
    if labels_file is not None:
        path = Path(labels_file)
        if path.exists() and not path.is_file():  # a FIFO would block the read, a device never end it
            raise InputError(f"{path}: not a regular file (--labels takes a text file, one label per line)")
        try:
            lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: cannot read labels ({exc})") from None
        labels = tuple(ln for ln in lines if ln)
        if len(labels) != num_classes:
            raise InputError(f"{path}: {len(labels)} labels for a model with {num_classes} classes "
                             "(one label per line)")
        if len(set(labels)) != len(labels):
            raise InputError(f"{path}: labels must be unique (a classifier maps each label to a probability)")
        return labels, str(path)
    if num_classes == 1000:
        from importlib.resources import files

        rows = files("shvit_edge.data").joinpath("imagenet1k_labels.tsv").read_text(encoding="utf-8")
        labels = tuple(ln.split("\t", 1)[1] for ln in rows.splitlines() if ln and not ln.startswith("#"))
        return labels, "imagenet-1k"
    return tuple(str(i) for i in range(num_classes)), "indices"
