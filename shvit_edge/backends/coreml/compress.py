"""Core ML ``--quantize``: the weight-only modes (coremltools.optimize.coreml, ``--keep-float`` layers left float),
w8a8 through PT2E and the Core ML quantizer that ExecuTorch ships (with :func:`_only_patterns_in`, which spares it
the patterns SHViT's graph cannot match), and the accuracy estimate measured off-device and judged against the
profile's tolerances."""

from __future__ import annotations

import contextlib

from ...errors import UsageError
from .inspect import WEIGHT_THRESHOLD, package_weights, weight_key


#: --quantize modes that compress the converted model's weights (the computation stays float)
WEIGHT_ONLY = ("int8-weights", "palettize-6", "palettize-4")
#: seeded random inputs the accuracy estimate runs on when the export has no calibration images
ESTIMATE_SAMPLES = 8


def compress_weights(job, mlmodel, model, mode: str, image_io: bool):
    """``mlmodel`` with its weights compressed by coremltools.optimize.coreml for ``mode`` (see the module
    docstring), leaving ``--keep-float`` layers' weights float; and the settings, for the manifest."""
    import coremltools.optimize as cto

    if mode == "int8-weights":
        settings = {"api": "coremltools.optimize.coreml.linear_quantize_weights",
                    "config": {"mode": "linear_symmetric", "dtype": "int8", "granularity": "per_channel",
                               "weight_threshold": WEIGHT_THRESHOLD}}
        op_config = cto.coreml.OpLinearQuantizerConfig(**settings["config"])
        compress = cto.coreml.linear_quantize_weights
    else:
        settings = {"api": "coremltools.optimize.coreml.palettize_weights",
                    "config": {"mode": "kmeans", "nbits": int(mode.rsplit("-", 1)[1]), "granularity": "per_tensor",
                               "weight_threshold": WEIGHT_THRESHOLD}}
        op_config = cto.coreml.OpPalettizerConfig(**settings["config"])
        compress = cto.coreml.palettize_weights
    kept = _keep_float_consts(mlmodel, model, job.options.keep_float)
    config = cto.coreml.OptimizationConfig(global_config=op_config, op_name_configs={name: None for name in kept})
    if job.progress is not None:
        job.progress(f"compressing the weights ({mode}) ...")
    return compress(mlmodel, config), settings


def lifted(name: str) -> str:
    """A parameter's name as ``torch.export`` lifts it and the converter keeps it: ``inner.head.weight`` ->
    ``p_inner_head_weight``."""
    return "p_" + name.replace(".", "_")


def _param_keys(model) -> dict[str, str]:
    """The torch model's parameter names by the name ``torch.export`` lifts them under, as the converter keeps
    it (``inner.head.weight`` -> ``p_inner_head_weight``); names that would collide are left out."""
    keys: dict[str, list[str]] = {}
    for name, _ in model.named_parameters():
        keys.setdefault(lifted(name), []).append(name)
    return {key: names[0] for key, names in keys.items() if len(names) == 1}


def _keep_float_consts(mlmodel, model, layers: tuple[str, ...]) -> list[str]:
    """The const op names of the weights of ``layers`` (deploy-model module names) in the converted program,
    which ``OptimizationConfig(op_name_configs=...)`` leaves uncompressed."""
    if not layers:
        return []
    prefix = "inner." if hasattr(model, "inner") else ""
    wanted = {lifted(f"{prefix}{layer}.weight"): layer for layer in layers}
    found: dict[str, str] = {}
    for op in mlmodel._mil_program.functions["main"].operations:
        if op.op_type == "const" and weight_key(op.outputs[0].name) in wanted:
            found[wanted[weight_key(op.outputs[0].name)]] = op.name
    missing = [layer for layer in layers if layer not in found]
    if missing:
        raise RuntimeError(f"--keep-float {missing[0]}: its weight is not a constant of the Core ML program")
    return [found[layer] for layer in layers]


#: how ``w8a8`` quantizes, for the manifest
W8A8_SETTINGS = {
    "api": "torchao prepare_pt2e/convert_pt2e with executorch.backends.apple.coreml.quantizer.CoreMLQuantizer "
           "(coremltools.optimize.torch LinearQuantizerConfig), then coremltools.convert",
    "config": {"quantization_scheme": "symmetric", "weight_dtype": "qint8", "weight_per_channel": True,
               "activation_dtype": "quint8", "observer": "moving_average_min_max"},
}


def quantize_w8a8(job, model, program, example, image_io: bool):
    """``program`` quantized with PT2E and the Core ML quantizer: int8 per-channel weights, activations observed
    on the job's calibration inputs (``--keep-float`` layers left out of the annotation). Returns the quantized
    program, re-captured for conversion, the calibration, and the accuracy estimate of the quantized torch
    model against ``model`` on the calibration inputs."""
    import numpy as np
    import torch

    try:
        from coremltools.optimize.torch.quantization.quantization_config import LinearQuantizerConfig
        from executorch.backends.apple.coreml.quantizer import CoreMLQuantizer
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError as exc:
        raise UsageError(f"--quantize w8a8 calibrates int8 activations in PyTorch with the Core ML quantizer "
                         f"that ExecuTorch ships (coremltools' own calibration runs the model, which only macOS "
                         f"can): pip install 'shvit-edge[executorch]' ({exc})") from None
    from ...quantize import calibration_batches

    config = dict(W8A8_SETTINGS["config"], weight_dtype=torch.qint8, activation_dtype=torch.quint8)
    del config["observer"]  # coremltools' default, recorded for the manifest
    prefix = "inner." if image_io else ""
    quantizer = CoreMLQuantizer(LinearQuantizerConfig.from_dict(
        {"global_config": config, "module_name_configs": {prefix + layer: None for layer in job.options.keep_float}}))
    calibration = job.calibration()
    if job.progress is not None:
        job.progress("annotating the model for w8a8 (PT2E, Core ML quantizer) ...")
    with torch.no_grad(), _only_patterns_in(program.graph):
        prepared = prepare_pt2e(program.module(), quantizer)
    with torch.no_grad():
        for x in job.calibration_batches(calibration):
            prepared(torch.from_numpy(model_inputs(x, job.source.std, image_io)))
        converted = convert_pt2e(prepared)
        quantized = torch.export.export(converted, (example,))
        chunks = [torch.from_numpy(model_inputs(x, job.source.std, image_io))
                  for x in calibration_batches(calibration, job.options.batch)]
        out = np.concatenate([converted(x).numpy() for x in chunks])[:calibration.count]
        ref = np.concatenate([model(x).numpy() for x in chunks])[:calibration.count]
    estimate = {
        "method": "the PT2E-quantized PyTorch model that was converted (int8 weights and int8 activations simulated "
                  "by quantize/dequantize in fp32) against the fp32 PyTorch model; not Core ML's fp16 arithmetic "
                  "or its kernels",
        "summary": "the quantized PyTorch model that was converted, int8 simulated in fp32",
        "inputs": f"the {calibration.count} calibration inputs ({calibration.source}; the same ones that set the "
                  "activation ranges)",
        "output": "classLabel_probs" if image_io else "logits",
        "metrics": _metrics(out, ref),
    }
    return quantized, calibration, estimate


#: activation functions of the Core ML quantizer's patterns -> the aten ops they export as
_ACTIVATION_OPS = {"relu6": ("relu6", "hardtanh"), "celu": ("celu", "elu"), "selu": ("selu", "elu"),
                   "logsigmoid": ("log_sigmoid", "log_sigmoid_forward")}


@contextlib.contextmanager
def _only_patterns_in(graph):
    """The Core ML quantizer captures a pattern graph (``torch.export``) for every combination of conv or linear
    dimension, batch norm and each of 15 activations before matching it: minutes of CPU, for SHViT's graph
    with no batch norm and only two activations. Within this block its annotators skip the patterns that need
    an op ``graph`` does not have (batch norm, pooling, an activation), which cannot match anyway; the
    annotations are the same, in a tenth of the time. Restored on exit."""
    from executorch.backends.apple.coreml.quantizer import _coreml_quantizer as quantizer
    from executorch.backends.apple.coreml.quantizer import _coreml_quantizer_utils as utils

    present = set()
    for node in graph.nodes:
        if node.op == "call_function":
            present.add(str(getattr(node.target, "__name__", node.target)).split(".")[0].rstrip("_"))

    def needed(fn) -> bool:
        name = getattr(fn, "__name__", "")
        return not name or any(op in present for op in _ACTIVATION_OPS.get(name, (name,)))

    registry = quantizer._AnnotationPatternRegistry.REGISTRY
    skip = [key for key in registry if ("_bn" in key and "batch_norm" not in present and
                                        "_native_batch_norm_legit_no_training" not in present)
            or ("pool" in key and not any("pool" in op for op in present))]
    saved = (utils._supported_activations, utils._supported_activations_no_inplace, dict(registry))
    utils._supported_activations = tuple(f for f in saved[0] if needed(f))
    utils._supported_activations_no_inplace = tuple(f for f in saved[1] if needed(f))
    for key in skip:
        del registry[key]
    try:
        yield
    finally:
        utils._supported_activations, utils._supported_activations_no_inplace = saved[0], saved[1]
        registry.clear()
        registry.update(saved[2])


def _metrics(out, ref) -> dict:
    from ...parity.metrics import compare

    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in compare(out, ref).as_dict().items()}


def model_inputs(x, std, image_io: bool):
    """Normalized inputs ``x`` ((pixel / 255 - mean) / std, N x 3 x H x W) as the converted torch model takes
    them: the image model gets (pixel / 255 - mean), since 1/std is folded into its first conv."""
    import numpy as np

    x = np.asarray(x, np.float32)
    return x * np.asarray(std, np.float32)[None, :, None, None] if image_io else x


def estimate_inputs(job, image_io: bool):
    """The model inputs of the accuracy estimate (see :func:`model_inputs`) and what they are: the calibration
    images when the export has them, else seeded random inputs as verify makes them (random pixels for an
    image input, standard-normal tensors for a tensor input)."""
    import numpy as np

    if job.options.calibration is not None and job.options.calibration != "random":
        calibration = job.calibration()
        described = f"{calibration.count} images from {calibration.source}"
        return model_inputs(calibration.inputs, job.source.std, image_io), described
    from ...images import normalize

    h, w = job.resolution
    rng = np.random.default_rng(0)
    if image_io:
        pixels = rng.integers(0, 256, (ESTIMATE_SAMPLES, 3, h, w), dtype=np.uint8)
        return (model_inputs(normalize(pixels, job.preprocessing()), job.source.std, image_io),
                f"{ESTIMATE_SAMPLES} random images (seed 0; no images given)")
    x = rng.standard_normal((ESTIMATE_SAMPLES, 3, h, w), dtype=np.float32)
    return x, f"{ESTIMATE_SAMPLES} random standard-normal inputs (seed 0; no images given)"


def weight_compression_estimate(path, model, x, image_io: bool, inputs: str = "") -> dict:
    """A measured accuracy estimate for a package that cannot run here: its weights, read back from the package
    (compressed ones decompressed from their constexpr ops, the others as stored, fp16 for an fp16 package),
    are loaded into a copy of ``model`` (the fp32 PyTorch model it was converted from: the image model with
    the softmax head, or the deploy model) in place of the originals, and both run in fp32 on ``x``, the
    model's inputs (N x 3 x H x W; see :func:`model_inputs`). Their outputs (probabilities for an image
    classifier, as verify compares them on a Mac; its logits too) are compared as verify compares them. It
    measures what the weight compression costs, not Core ML's fp16 arithmetic or its kernels."""
    import copy

    import numpy as np
    import torch

    found = {weight_key(name): value for name, value in package_weights(path).items()}
    keys = _param_keys(model)
    candidate = copy.deepcopy(model).eval()
    params = dict(candidate.named_parameters())
    counts = {"compressed": 0, "float": 0, "not_in_package": 0}
    with torch.no_grad():
        for key, name in keys.items():
            param = params[name]
            if key not in found or tuple(found[key][0].shape) != tuple(param.shape):
                counts["not_in_package"] += 1
                continue
            value, kind = found[key]
            original = param.detach().double().numpy().ravel()
            denom = np.linalg.norm(original) * np.linalg.norm(value)
            if denom > 0 and float(np.dot(original, value.ravel().astype(np.float64)) / denom) < 0.9:
                raise RuntimeError(f"the package's {key} is not the model's {name} (cosine below 0.9)")
            param.copy_(torch.from_numpy(value))
            counts["compressed" if kind else "float"] += 1
        unmatched = [k for k, (_, kind) in found.items() if kind and k not in keys]
        if unmatched:
            raise RuntimeError(f"compressed weight {unmatched[0]} of the package matches no parameter of the model")
        xs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        ref, out = model(xs).numpy(), candidate(xs).numpy()
        estimate = {
            "method": "the package's weights (compressed ones decompressed from their constexpr ops) loaded into the "
                      "fp32 PyTorch model in place of its own, run in fp32 and compared with the fp32 model: "
                      "measures the weight compression, not Core ML's fp16 arithmetic or its kernels",
            "inputs": inputs or f"{len(x)} inputs",
            "summary": "package weights decompressed into the fp32 PyTorch model: the weight compression alone",
            "output": "classLabel_probs" if image_io else "logits",
            "metrics": _metrics(out, ref),
            "weights": counts,
        }
        if image_io:
            estimate["logits"] = _metrics(candidate.inner(xs).numpy(), model.inner(xs).numpy())
    return estimate


def judged(estimate: dict, profile, mode: str) -> dict:
    """``estimate`` with the verdict of the profile's tolerance class for ``mode`` on its output metrics."""
    from ...errors import ShvitEdgeError
    from ...parity.judge import judge
    from ...parity.metrics import ParityMetrics
    from ...quantize import tolerance_class

    name = tolerance_class("coreml", mode)
    try:
        tolerance = profile.tolerance(name)
    except ShvitEdgeError:
        return {**estimate, "tolerance_class": name, "within_tolerance": None,
                "problems": [f"the profile has no [tolerances.{name}]"]}
    metrics = {k: (float("inf") if v is None and k == "sqnr_db" else v) for k, v in estimate["metrics"].items()}
    problems = judge(ParityMetrics(**metrics), tolerance)
    return {**estimate, "tolerance_class": name, "within_tolerance": not problems, "problems": problems}
