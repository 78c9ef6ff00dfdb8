"""Core ML ``--quantize``: the weight-only modes (coremltools.optimize.coreml, ``--keep-float`` layers left float),
and w8a8 through PT2E and the Core ML quantizer that ExecuTorch ships (with :func:`_only_patterns_in`, which spares
it the patterns SHViT's graph cannot match). What a mode costs is measured by verify on the compressed program
itself (Core ML on macOS, the coreml-sim interpreter elsewhere)."""

from __future__ import annotations

import contextlib

from ...errors import UsageError
from .inspect import WEIGHT_THRESHOLD, weight_key


#: --quantize modes that compress the converted model's weights (the computation stays float)
WEIGHT_ONLY = ("int8-weights", "palettize-6", "palettize-4")


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
    program, re-captured for conversion, and the calibration. (What the quantization costs is measured by
    verify, which runs the converted program: in Core ML, or in the coreml-sim interpreter.)"""
    import torch

    try:
        from coremltools.optimize.torch.quantization.quantization_config import LinearQuantizerConfig
        from executorch.backends.apple.coreml.quantizer import CoreMLQuantizer
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError as exc:
        raise UsageError(f"--quantize w8a8 calibrates int8 activations in PyTorch with the Core ML quantizer "
                         f"that ExecuTorch ships (coremltools' own calibration runs the model, which only macOS "
                         f"can): pip install 'shvit-edge[executorch]' ({exc})") from None
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
    return quantized, calibration


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


def model_inputs(x, std, image_io: bool):
    """Normalized inputs ``x`` ((pixel / 255 - mean) / std, N x 3 x H x W) as the converted torch model takes
    them: the image model gets (pixel / 255 - mean), since 1/std is folded into its first conv."""
    import numpy as np

    x = np.asarray(x, np.float32)
    return x * np.asarray(std, np.float32)[None, :, None, None] if image_io else x
