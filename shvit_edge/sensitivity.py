"""Quantization sensitivity: what quantizing each layer of the deploy model costs, and what keeping the worst
ones in float buys on the real artifact.

:func:`report` is the library entry point behind ``shvit-edge quantize-report``. It simulates a ``--quantize``
mode in PyTorch, one layer at a time, on the fp32 deploy model: the layer's weights quantized as the backends
do it (int8: symmetric per output channel; palettize-N: coremltools' own k-means palettizer; fp16: a cast)
and, for the modes that quantize activations, the layer's input too (int8 static: per-tensor with the range
seen on the calibration inputs; int8-dynamic: per-tensor with the input's own range). Each layer's cost is the
SQNR of the logits against fp32 with only that layer quantized; the worst layers come first. The simulation
then quantizes every layer, and every layer but the worst ``keep``, to predict what ``--keep-float`` gains.

Simulation is not the artifact: with ``validate`` the report also exports the real artifact twice with the
target's own tooling (all layers quantized; the worst ``keep`` left in float with ``--keep-float``), runs
both in their runtime through :func:`~shvit_edge.verify.verify`, and reports the measured SQNR and gain.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from .errors import UsageError
from .quantize import is_calibrated, quantizable_layers

#: modes the simulation covers, and how: (weights, activations)
SIMULATED = {
    "int8": ("int8", "static"), "w8a8": ("int8", "static"), "int8-dynamic": ("int8", "dynamic"),
    "int8-weights": ("int8", None), "palettize-6": ("palettize-6", None), "palettize-4": ("palettize-4", None),
    "fp16": ("fp16", "fp16"),
}
#: the gain in dB that the issue asks keeping the worst layers to reach
TARGET_GAIN_DB = 3.0

Progress = Callable[[str], None]


@dataclass(frozen=True)
class LayerCost:
    layer: str
    kind: str
    params: int
    #: SQNR of the logits against fp32 with only this layer quantized (lower costs more)
    sqnr_db: float
    #: this layer's share of the summed noise power of all layers quantized alone
    noise_share: float


@dataclass(frozen=True)
class Report:
    variant: str
    target: str
    profile: str
    mode: str
    resolution: tuple[int, int]
    inputs: str
    keep: tuple[str, ...]
    #: simulated SQNR of the logits: every layer quantized, and every layer but ``keep``
    simulated_sqnr_db: float
    simulated_sqnr_keep_db: float
    layers: tuple[LayerCost, ...]
    #: measured on the real artifacts (None without validation): sqnr_db, sqnr_keep_db, gain_db, artifacts
    validation: dict | None
    verdict: str

    def as_json(self) -> dict:
        return asdict(self)


def _kind(module) -> str:
    import torch.nn as nn

    if isinstance(module, nn.Linear):
        return "linear"
    k = "x".join(str(s) for s in module.kernel_size)
    return f"depthwise {k}" if module.groups > 1 and module.groups == module.in_channels else f"conv {k}"


def sqnr_db(reference: np.ndarray, output: np.ndarray) -> float:
    from .parity.metrics import compare

    return compare(output, reference).sqnr_db


def _int8_per_channel(weight):
    """Symmetric int8 per output channel (scale = max |w| / 127), as XNNPACK, ORT and Core ML quantize weights."""
    import torch

    flat = weight.detach().reshape(weight.shape[0], -1)
    scale = (flat.abs().amax(dim=1) / 127).clamp(min=1e-12).float()
    zero = torch.zeros(weight.shape[0], dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(weight.detach(), scale, zero, 0, -127, 127)


def _palettized(model, names: list[str], bits: int) -> dict:
    """Each layer's weight after coremltools' post-training k-means palettization (per tensor, as iOS 16 takes
    it), from coremltools.optimize.torch."""
    import copy

    from coremltools.optimize.torch.palettization import PostTrainingPalettizer, PostTrainingPalettizerConfig

    config = PostTrainingPalettizerConfig.from_dict({"module_name_configs": {
        name: {"n_bits": bits, "granularity": "per_tensor"} for name in names}})
    palettized = PostTrainingPalettizer(copy.deepcopy(model), config).compress()
    modules = dict(palettized.named_modules())
    return {name: modules[name].weight.detach().clone() for name in names}


def _fake_quant_activation(x, kind: str, observed: tuple[float, float] | None):
    """``x`` quantized per tensor and back: int8 over ``observed`` (static) or its own range (dynamic)."""
    import torch

    if kind == "fp16":
        return x.half().float()
    lo, hi = observed if kind == "static" else (float(x.min()), float(x.max()))
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max((hi - lo) / 255, 1e-12)
    zero = int(max(-128, min(127, round(-128 - lo / scale))))
    return torch.fake_quantize_per_tensor_affine(x, scale, zero, -128, 127)


class _Simulator:
    """The deploy model with any subset of its layers quantized as ``mode`` does it."""

    def __init__(self, model, mode: str, calibration: np.ndarray | None):
        self.model = model
        self.modules = dict(model.named_modules())
        self.names = quantizable_layers(model)
        weights, self.activations = SIMULATED[mode]
        originals = {n: self.modules[n].weight.detach().clone() for n in self.names}
        if weights == "int8":
            quantized = {n: _int8_per_channel(w) for n, w in originals.items()}
        elif weights == "fp16":
            quantized = {n: w.half().float() for n, w in originals.items()}
        else:
            quantized = _palettized(model, self.names, int(weights.rsplit("-", 1)[1]))
        self.weights = {n: (originals[n], quantized[n]) for n in self.names}
        self.ranges: dict[str, tuple[float, float]] = {}
        if self.activations == "static":
            self._observe(calibration)

    def _observe(self, calibration: np.ndarray) -> None:
        """Each layer's input range over the calibration inputs (a min/max observer)."""
        import torch

        def hook(name):
            def record(module, args):
                lo, hi = float(args[0].min()), float(args[0].max())
                old = self.ranges.get(name, (lo, hi))
                self.ranges[name] = (min(lo, old[0]), max(hi, old[1]))
            return record

        handles = [self.modules[n].register_forward_pre_hook(hook(n)) for n in self.names]
        try:
            with torch.no_grad():
                for i in range(0, len(calibration), 16):
                    self.model(torch.from_numpy(calibration[i:i + 16]))
        finally:
            for h in handles:
                h.remove()

    @contextlib.contextmanager
    def quantized(self, names):
        """The model with ``names`` quantized (weights swapped, inputs fake-quantized) inside the block."""
        import torch

        handles = []
        with torch.no_grad():
            for n in names:
                self.modules[n].weight.copy_(self.weights[n][1])
                if self.activations is not None:
                    def pre(module, args, name=n):
                        return (_fake_quant_activation(args[0], self.activations, self.ranges.get(name)),
                                *args[1:])
                    handles.append(self.modules[n].register_forward_pre_hook(pre))
        try:
            yield self.model
        finally:
            with torch.no_grad():
                for n in names:
                    self.modules[n].weight.copy_(self.weights[n][0])
            for h in handles:
                h.remove()

    def logits(self, names, x: np.ndarray) -> np.ndarray:
        import torch

        with self.quantized(names) as model, torch.no_grad():
            return np.concatenate([model(torch.from_numpy(x[i:i + 16])).numpy() for i in range(0, len(x), 16)])


def report(source, profile, options, images: str | None, samples: int, keep: int = 3, validate: bool = True,
           seed: int = 0, progress: Progress | None = None) -> Report:
    """The sensitivity report for exporting ``source`` to ``profile`` with ``options`` (an
    :class:`~shvit_edge.export.ExportOptions` with ``quantize`` set). Evaluated on the ``images`` folder and
    ``samples`` seeded random inputs."""
    from .export import ExportJob, check_options
    from .images import list_images, load_pixels, normalize

    progress = progress or (lambda message: None)
    mode = options.quantize
    if mode is None:
        raise UsageError("quantize-report needs --quantize MODE")
    check_options([profile], options, source)
    if mode not in SIMULATED:
        raise UsageError(f"quantize-report does not simulate --quantize {mode} (it does: {', '.join(SIMULATED)})")
    if keep < 1:
        raise UsageError(f"--keep must be at least 1, got {keep}")
    if samples < 0:
        raise UsageError(f"--samples must be 0 or more, got {samples}")
    job = ExportJob(source=source, profile=profile, options=options, precision="fp32", progress=progress)
    paths = list_images(images) if images is not None else []
    if not paths and samples == 0:
        raise UsageError("nothing to measure on: give --images, or --samples above 0")
    h, w = options.resolution
    pre = job.preprocessing()
    rng = np.random.default_rng(seed)
    x = np.concatenate([normalize(load_pixels(paths, (h, w), pre), pre) if paths else np.zeros((0, 3, h, w),
                                                                                                 np.float32),
                        rng.standard_normal((samples, 3, h, w), dtype=np.float32)])
    inputs = f"{len(paths)} images + {samples} random inputs"
    calibration = job.calibration().inputs if is_calibrated(profile.backend, mode) else None

    progress("simulating the quantization of each layer ...")
    model = source.deploy_model()
    sim = _Simulator(model, mode, calibration)
    reference = sim.logits([], x)
    costs = []
    for i, name in enumerate(sim.names):
        progress(f"layer {i + 1}/{len(sim.names)}: {name}")
        module = sim.modules[name]
        costs.append((name, _kind(module), module.weight.numel(), sqnr_db(reference, sim.logits([name], x))))
    noise = [10 ** (-c[3] / 10) for c in costs]
    total_noise = sum(noise) or 1.0
    layers = tuple(sorted((LayerCost(n, k, p, round(s, 2), round(e / total_noise, 4))
                           for (n, k, p, s), e in zip(costs, noise, strict=True)), key=lambda c: c.sqnr_db))
    worst = tuple(c.layer for c in layers[:keep])
    simulated_all = sqnr_db(reference, sim.logits(sim.names, x))
    simulated_keep = sqnr_db(reference, sim.logits([n for n in sim.names if n not in worst], x))

    validation, not_validated = None, _why_not_validated(profile, validate)
    if not_validated is None:
        validation = _validate(source, profile, options, worst, paths, images, samples, seed, progress)
    verdict = _verdict(layers, worst, simulated_all, simulated_keep, validation, not_validated)
    return Report(variant=source.variant, target=profile.backend, profile=profile.name, mode=mode,
                  resolution=(h, w), inputs=inputs, keep=worst, simulated_sqnr_db=round(simulated_all, 2),
                  simulated_sqnr_keep_db=round(simulated_keep, 2), layers=layers, validation=validation,
                  verdict=verdict)


def _validate(source, profile, options, worst, paths, images, samples, seed, progress) -> dict:
    """Export the artifact with every layer quantized and with ``worst`` kept in float, verify both, and
    return their measured SQNR against the fp32 model."""
    import dataclasses

    from .export import export
    from .verify import VerifyOptions, verify

    measured = {}
    with tempfile.TemporaryDirectory(prefix="shvit-edge-quantize-report-") as folder:
        for label, kept in (("all", ()), ("keep", worst)):
            what = f"the worst {len(kept)} layers in float" if kept else "every layer quantized"
            progress(f"exporting the {profile.backend} artifact with {what} ...")
            opts = dataclasses.replace(options, keep_float=kept)
            (artifact,) = export(source, [profile], opts, f"{folder}/{label}", progress=progress).artifacts
            progress(f"verifying {artifact.path.name} ...")
            (result,) = verify([artifact.path], VerifyOptions(images=images, samples=samples, seed=seed),
                               progress=progress)
            metrics = next(iter(result.metrics.values()), {})
            measured[label] = {"sqnr_db": metrics.get("sqnr_db"), "cosine": metrics.get("cosine"),
                               "status": result.status, "size_bytes": artifact.size_bytes}
    gain = None
    if measured["all"]["sqnr_db"] is not None and measured["keep"]["sqnr_db"] is not None:
        gain = round(measured["keep"]["sqnr_db"] - measured["all"]["sqnr_db"], 2)
    return {"sqnr_db": measured["all"]["sqnr_db"], "sqnr_keep_db": measured["keep"]["sqnr_db"], "gain_db": gain,
            "artifacts": measured}


def _why_not_validated(profile, validate: bool) -> str | None:
    """Why the artifact cannot be measured with and without the worst layers in float, or None if it can."""
    from .backends.base import get_backend

    if not validate:
        return "--no-validate"
    backend = get_backend(profile.backend)
    if all(setting in backend.interpreters for setting in backend.runtime_settings(profile)):
        return None  # verify interprets it here (Core ML off macOS: coreml-sim)
    return backend.cannot_run_here(None, None)


def _verdict(layers, worst, simulated_all, simulated_keep, validation, not_validated: str | None) -> str:
    share = sum(c.noise_share for c in layers[:len(worst)])
    predicted = simulated_keep - simulated_all
    head = (f"the worst {len(worst)} layers carry {share:.0%} of the summed per-layer noise; keeping them in float "
            f"is predicted to gain {predicted:.1f} dB (simulated {simulated_all:.1f} -> {simulated_keep:.1f} dB)")
    if validation is None:
        return f"{head}; not measured on the artifact: {not_validated}"
    gain = validation["gain_db"]
    if gain is None:
        return f"{head}; the artifacts could not be measured (see validation)"
    measured = (f"measured on the artifact: {validation['sqnr_db']:.1f} -> {validation['sqnr_keep_db']:.1f} dB "
                f"({gain:+.1f} dB)")
    if gain >= TARGET_GAIN_DB:
        return f"{head}; {measured}, at least {TARGET_GAIN_DB:.0f} dB"
    reasons = []
    if predicted < TARGET_GAIN_DB:
        reasons.append(f"even simulated the gain is {predicted:.1f} dB: the rest of the noise is spread over the "
                       f"other {len(layers) - len(worst)} layers")
    if gain < predicted - 1.0:
        reasons.append(f"the artifact gains less than simulated ({gain:.1f} vs {predicted:.1f} dB): "
                       "the backend still quantizes the tensors between a float layer and its quantized "
                       "neighbours and the ops between layers (residual adds, attention matmuls, normalization), "
                       "which the per-layer simulation leaves in float")
    if not reasons:
        reasons.append("the artifact's quantization noise is close to what the simulation predicts, and that is "
                       "spread over many layers")
    return f"{head}; {measured}: less than {TARGET_GAIN_DB:.0f} dB because " + "; and ".join(reasons)
