"""Core ML: an ML program ``.mlpackage`` for Xcode (iOS 16 by default), converted with coremltools.

Default I/O is what an app wants: input ``image``, an RGB ``ImageType`` (a ``CVPixelBuffer`` or ``CGImage``)
whose scale 1/255 and bias -mean are applied by Core ML, with 1/std folded into the first conv; output a
classifier (``classLabel`` and ``classLabel_probs``, softmax probabilities) with class labels. ``--coreml-io
tensor`` gives a normalized float32 tensor ``image`` in and ``logits`` out. Core ML cannot predict on Linux;
the package's spec can be read anywhere (:func:`describe`).

``--quantize`` (coremltools.optimize; the compute precision stays ``--precision``):

- ``int8-weights``: ``linear_quantize_weights``, symmetric int8 per output channel (``constexpr_affine_dequantize``
  from iOS 16, ``constexpr_blockwise_shift_scale`` from iOS 18);
- ``palettize-6`` / ``palettize-4``: ``palettize_weights``, k-means, one 64- or 16-entry LUT per weight tensor
  (``constexpr_lut_to_dense``; per-tensor is the granularity iOS 16 runs: grouped-channel LUTs and per-channel
  scales need iOS 18);
- ``w8a8`` (iOS 17+): int8 activations need ranges, and coremltools' ``linear_quantize_activations`` gets them
  with ``MLModel.predict``, which only macOS has. So the torch model is quantized before conversion instead,
  with PT2E and the Core ML quantizer (``CoreMLQuantizer``, Apple's annotation of coremltools.optimize.torch,
  as ExecuTorch ships it for torchao): symmetric int8 per-channel weights and uint8 activations observed on
  the calibration inputs; the converter turns its quantize/dequantize pairs into Core ML ``quantize`` /
  ``dequantize`` ops and its int8 weights into ``constexpr_affine_dequantize``.

Weights of at most :data:`WEIGHT_THRESHOLD` elements (biases, most depthwise kernels) stay in float, as
coremltools recommends. Since Core ML cannot run here, every quantized export records a measured accuracy
estimate in its manifest (``details["weight_compression_estimate"]``, see :func:`weight_compression_estimate`)
and verify's structural check (:func:`structural_problems`) checks that the compressed weights are in the
package, with the mode's bit width.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections import Counter
from pathlib import Path

from ..errors import UsageError
from ..manifest import TensorSpec
from ._quiet import quiet
from .base import BackendResult, modules_available

NAME = "coreml"
SUFFIX = ".mlpackage"
#: what ``load`` imports: a host benchmark imports it before timing the load
RUNTIME_MODULES = ("coremltools",)

#: --quantize modes that compress the converted model's weights (the computation stays float)
WEIGHT_ONLY = ("int8-weights", "palettize-6", "palettize-4")
#: weights with at most this many elements stay float (coremltools' default ``weight_threshold``)
WEIGHT_THRESHOLD = 2048
#: the compressed-weight op types and bit width each mode must leave in the package
EXPECTED_COMPRESSION: dict[str, tuple[tuple[str, ...], int]] = {
    "int8-weights": (("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale"), 8),
    "palettize-6": (("constexpr_lut_to_dense",), 6),
    "palettize-4": (("constexpr_lut_to_dense",), 4),
    "w8a8": (("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale"), 8),
}
#: seeded random inputs the accuracy estimate runs on when the export has no calibration images
ESTIMATE_SAMPLES = 8


def is_available() -> bool:
    return modules_available("coremltools")


def _softmax_head(model):
    import torch

    class WithSoftmax(torch.nn.Module):
        """Core ML's classifier maps its input to labels as is; apps expect probabilities."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return torch.softmax(self.inner(x), dim=-1)

    return WithSoftmax(model).eval()


def _deployment_target(name: str):
    import coremltools as ct

    try:
        return getattr(ct.target, name)
    except AttributeError:
        raise UsageError(f"unknown Core ML deployment target {name!r} in the target profile") from None


def export(job, out: Path) -> BackendResult:
    with quiet():  # coremltools' import notices and per-pass progress bars
        return _export(job, out)


def _export(job, out: Path) -> BackendResult:
    import coremltools as ct
    import numpy as np
    import torch

    from .. import __version__

    options, source = job.options, job.source
    h, w = job.resolution
    batch = options.batch
    image_io = options.coreml_io == "image"
    if image_io and batch != 1:
        raise UsageError("a Core ML image input takes one image (batch 1); for batch > 1 use --coreml-io tensor")
    target_name = job.profile.export.minimum_deployment_target or "iOS16"
    precision = ct.precision.FLOAT16 if job.precision == "fp16" else ct.precision.FLOAT32
    example = job.example_input()
    mode = options.quantize
    if mode is not None and mode not in EXPECTED_COMPRESSION:
        raise UsageError(f"--quantize {mode} is not a Core ML mode (Core ML: {', '.join(EXPECTED_COMPRESSION)})")
    if image_io:
        model = _softmax_head(source.deploy_model(fold_std=True))
        with torch.no_grad():
            program = torch.export.export(model, (example,))
        inputs = [ct.ImageType(name="image", shape=(1, 3, h, w), color_layout=ct.colorlayout.RGB,
                               scale=1 / 255.0, bias=[-m for m in source.mean], channel_first=True)]
        extra = {"classifier_config": ct.ClassifierConfig(list(source.labels))}
    else:
        model = source.deploy_model()
        program = source.exported_program(example)
        inputs = [ct.TensorType(name="image", shape=(batch, 3, h, w), dtype=np.float32)]
        extra = {"outputs": [ct.TensorType(name="logits", dtype=np.float32)]}
    calibration = estimate = None
    if mode == "w8a8":  # activation ranges come from running the torch model: see the module docstring
        program, calibration, estimate = _quantize_w8a8(job, model, program, example, image_io)
    mlmodel = ct.convert(program.run_decompositions({}), inputs=inputs, convert_to="mlprogram",
                         minimum_deployment_target=_deployment_target(target_name), compute_precision=precision,
                         **extra)
    settings = None
    if mode in WEIGHT_ONLY:
        mlmodel, settings = _compress_weights(job, mlmodel, model, mode, image_io)
    preprocessing = {"color": "RGB", "scale": 1 / 255, "mean": list(source.mean), "std": list(source.std),
                     "applied": "in-model" if image_io else "none"}
    mlmodel.short_description = (
        f"SHViT {source.variant} image classifier, {h}x{w}, {source.num_classes} classes"
        f"{' (UNTRAINED weights: for pipeline and latency checks only)' if source.untrained else ''}. "
        "Single-Head Vision Transformer (Yun & Ro, CVPR 2024), exported by shvit-edge.")
    mlmodel.author = "shvit-edge"
    mlmodel.license = "See the license of the checkpoint's weights"
    mlmodel.version = __version__
    mlmodel.user_defined_metadata.update({
        "shvit_edge.variant": source.variant, "shvit_edge.resolution": f"{h}x{w}",
        "shvit_edge.num_classes": str(source.num_classes), "shvit_edge.precision": job.precision,
        "shvit_edge.preprocessing": json.dumps(preprocessing), "shvit_edge.labels": source.labels_source,
        "shvit_edge.checkpoint": source.checkpoint.path, "shvit_edge.untrained": str(source.untrained).lower(),
    })
    if image_io:
        mlmodel.input_description["image"] = (f"RGB image, {w} wide and {h} high; resize the shorter side and "
                                              "centre-crop first. Normalization is built in.")
        mlmodel.output_description["classLabel"] = "The most likely class label."
        mlmodel.output_description["classLabel_probs"] = "Softmax probability of every class label."
        outputs = (TensorSpec("classLabel", (1,), "string", "classifier"),
                   TensorSpec("classLabel_probs", (source.num_classes,), "float32", "classifier"))
        input_spec = TensorSpec("image", (1, 3, h, w), "uint8", "NCHW", kind="image")
    else:
        mlmodel.input_description["image"] = "float32 NCHW tensor, normalized: (pixel / 255 - mean) / std."
        mlmodel.output_description["logits"] = f"float32 ({batch}, {source.num_classes}) class scores."
        outputs = (TensorSpec("logits", (batch, source.num_classes), "float32", "NC"),)
        input_spec = TensorSpec("image", (batch, 3, h, w), "float32", "NCHW")
    # MLModel.save insists on the .mlpackage suffix: save inside the temporary folder, then lift it out
    staging = out.with_name(out.name + ".staging")
    staged = staging / "model.mlpackage"
    try:
        mlmodel.save(str(staged))
        staged.rename(out)
    finally:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    info = describe(out)
    details = {"minimum_deployment_target": target_name, "compute_precision": job.precision,
               "compute_units": list(job.profile.export.compute_units), "ops": info["ops"],
               "weight_dtypes": info["weight_dtypes"], "specification_version": info["specification_version"]}
    quantization = None
    if mode is not None:
        if mode == "w8a8":
            settings = _W8A8_SETTINGS
        if options.keep_float:  # their weights, by name in the program (see _weight_key)
            prefix = "inner." if image_io else ""
            settings = {**settings, "keep_float_weights": [_lifted(f"{prefix}{layer}.weight")
                                                           for layer in options.keep_float]}
        details["compression"] = {**settings, **compression(out)}
        if estimate is None:
            x, described = _estimate_inputs(job, image_io)
            if job.progress is not None:
                job.progress(f"estimating the accuracy of the {mode} weights on {described} ...")
            estimate = weight_compression_estimate(out, model, x, image_io=image_io, inputs=described)
        details["weight_compression_estimate"] = _judged(estimate, job.profile, mode)
        quantization = job.quantization(calibration)
    return BackendResult(inputs=(input_spec,), outputs=outputs, preprocessing_applied=preprocessing["applied"],
                         details=details, quantization=quantization)


def _compress_weights(job, mlmodel, model, mode: str, image_io: bool):
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


def _weight_key(name: str) -> str:
    """A weight's name in the Core ML program without the suffixes conversion and compression add:
    ``p_inner_head_weight_to_fp16_palettized`` -> ``p_inner_head_weight``."""
    for suffix in ("_palettized", "_quantized", "_to_fp16"):
        name = name.removesuffix(suffix)
    return name


def _lifted(name: str) -> str:
    """A parameter's name as ``torch.export`` lifts it and the converter keeps it: ``inner.head.weight`` ->
    ``p_inner_head_weight``."""
    return "p_" + name.replace(".", "_")


def _param_keys(model) -> dict[str, str]:
    """The torch model's parameter names by the name ``torch.export`` lifts them under, as the converter keeps
    it (``inner.head.weight`` -> ``p_inner_head_weight``); names that would collide are left out."""
    keys: dict[str, list[str]] = {}
    for name, _ in model.named_parameters():
        keys.setdefault(_lifted(name), []).append(name)
    return {key: names[0] for key, names in keys.items() if len(names) == 1}


def _keep_float_consts(mlmodel, model, layers: tuple[str, ...]) -> list[str]:
    """The const op names of the weights of ``layers`` (deploy-model module names) in the converted program,
    which ``OptimizationConfig(op_name_configs=...)`` leaves uncompressed."""
    if not layers:
        return []
    prefix = "inner." if hasattr(model, "inner") else ""
    wanted = {_lifted(f"{prefix}{layer}.weight"): layer for layer in layers}
    found: dict[str, str] = {}
    for op in mlmodel._mil_program.functions["main"].operations:
        if op.op_type == "const" and _weight_key(op.outputs[0].name) in wanted:
            found[wanted[_weight_key(op.outputs[0].name)]] = op.name
    missing = [layer for layer in layers if layer not in found]
    if missing:
        raise RuntimeError(f"--keep-float {missing[0]}: its weight is not a constant of the Core ML program")
    return [found[layer] for layer in layers]


#: how ``w8a8`` quantizes, for the manifest
_W8A8_SETTINGS = {
    "api": "torchao prepare_pt2e/convert_pt2e with executorch.backends.apple.coreml.quantizer.CoreMLQuantizer "
           "(coremltools.optimize.torch LinearQuantizerConfig), then coremltools.convert",
    "config": {"quantization_scheme": "symmetric", "weight_dtype": "qint8", "weight_per_channel": True,
               "activation_dtype": "quint8", "observer": "moving_average_min_max"},
}


def _quantize_w8a8(job, model, program, example, image_io: bool):
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
    from ..quantize import calibration_batches

    config = dict(_W8A8_SETTINGS["config"], weight_dtype=torch.qint8, activation_dtype=torch.quint8)
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
    from ..parity.metrics import compare

    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in compare(out, ref).as_dict().items()}


def model_inputs(x, std, image_io: bool):
    """Normalized inputs ``x`` ((pixel / 255 - mean) / std, N x 3 x H x W) as the converted torch model takes
    them: the image model gets (pixel / 255 - mean), since 1/std is folded into its first conv."""
    import numpy as np

    x = np.asarray(x, np.float32)
    return x * np.asarray(std, np.float32)[None, :, None, None] if image_io else x


def _estimate_inputs(job, image_io: bool):
    """The model inputs of the accuracy estimate (see :func:`model_inputs`) and what they are: the calibration
    images when the export has them, else seeded random inputs as verify makes them (random pixels for an
    image input, standard-normal tensors for a tensor input)."""
    import numpy as np

    if job.options.calibration is not None and job.options.calibration != "random":
        calibration = job.calibration()
        described = f"{calibration.count} images from {calibration.source}"
        return model_inputs(calibration.inputs, job.source.std, image_io), described
    from ..images import normalize

    h, w = job.resolution
    rng = np.random.default_rng(0)
    if image_io:
        pixels = rng.integers(0, 256, (ESTIMATE_SAMPLES, 3, h, w), dtype=np.uint8)
        return (model_inputs(normalize(pixels, job.preprocessing()), job.source.std, image_io),
                f"{ESTIMATE_SAMPLES} random images (seed 0; no images given)")
    x = rng.standard_normal((ESTIMATE_SAMPLES, 3, h, w), dtype=np.float32)
    return x, f"{ESTIMATE_SAMPLES} random standard-normal inputs (seed 0; no images given)"


def package_weights(path) -> dict:
    """Every weight of a saved package by its name in the program, as float32 numpy arrays, compressed ones
    decompressed by their constexpr op (as Core ML does when it loads the model), with that op's type
    (``None`` for a plain constant)."""
    import numpy as np

    program = _program(path)
    weights = {}
    for op in program.functions["main"].operations:
        name = op.outputs[0].name if op.outputs else ""
        if op.op_type == "const" and name.startswith("p_") and isinstance(op.outputs[0].val, np.ndarray):
            weights[name] = (np.asarray(op.outputs[0].val, np.float32), None)
        elif op.op_type.startswith("constexpr_") and name.startswith("p_"):
            weights[name] = (np.asarray(op.materialized_val_inference(), np.float32), op.op_type)
    return weights


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

    found = {_weight_key(name): value for name, value in package_weights(path).items()}
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


def _judged(estimate: dict, profile, mode: str) -> dict:
    """``estimate`` with the verdict of the profile's tolerance class for ``mode`` on its output metrics."""
    from ..errors import ShvitEdgeError
    from ..parity.judge import judge
    from ..parity.metrics import ParityMetrics
    from ..quantize import TOLERANCE_CLASS

    name = TOLERANCE_CLASS.get(mode, mode)
    try:
        tolerance = profile.tolerance(name)
    except ShvitEdgeError:
        return {**estimate, "tolerance_class": name, "within_tolerance": None,
                "problems": [f"the profile has no [tolerances.{name}]"]}
    metrics = {k: (float("inf") if v is None and k == "sqnr_db" else v) for k, v in estimate["metrics"].items()}
    problems = judge(ParityMetrics(**metrics), tolerance)
    return {**estimate, "tolerance_class": name, "within_tolerance": not problems, "problems": problems}


def describe(path) -> dict:
    """The structure of a saved ``.mlpackage``, read from its spec (works on Linux): inputs, outputs,
    deployment target, metadata, labels, op histogram and weight precision."""
    with quiet():
        import coremltools as ct
        from coremltools.proto import FeatureTypes_pb2, MIL_pb2

    spec = ct.utils.load_spec(str(path))
    desc = spec.description
    targets = {int(t.value): t.name for t in ct.target}
    inputs = []
    for feature in desc.input:
        kind = feature.type.WhichOneof("Type")
        item = {"name": feature.name, "type": kind}
        if kind == "imageType":
            image = feature.type.imageType
            item.update(width=image.width, height=image.height,
                        color=FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(image.colorSpace))
        elif kind == "multiArrayType":
            array = feature.type.multiArrayType
            item.update(shape=list(array.shape),
                        dtype=FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(array.dataType))
        inputs.append(item)
    outputs = [{"name": f.name, "type": f.type.WhichOneof("Type")} for f in desc.output]
    ops: Counter = Counter()
    weights: Counter = Counter()
    labels: list = []
    if spec.WhichOneof("Type") == "mlProgram":
        function = spec.mlProgram.functions["main"]
        for op in function.block_specializations[function.opset].operations:
            ops[op.type] += 1
            if op.type == "const" and op.attributes["val"].WhichOneof("value") == "blobFileValue":
                weights[MIL_pb2.DataType.Name(op.attributes["val"].type.tensorType.dataType)] += 1
            if op.type == "classify":
                values = op.inputs["classes"].arguments[0].value.immediateValue.list.values
                labels = [(v.immediateValue.tensor.strings.values or v.immediateValue.tensor.longInts.values)[0]
                          for v in values]
    meta = desc.metadata
    return {
        "specification_version": spec.specificationVersion,
        "minimum_deployment_target": targets.get(spec.specificationVersion, str(spec.specificationVersion)),
        "inputs": inputs, "outputs": outputs,
        "classifier": {"predicted_feature": desc.predictedFeatureName,
                       "probabilities": desc.predictedProbabilitiesName, "labels": labels}
        if desc.predictedFeatureName else None,
        "metadata": {"short_description": meta.shortDescription, "author": meta.author, "license": meta.license,
                     "version": meta.versionString, "user_defined": dict(meta.userDefined)},
        "ops": dict(sorted((k, v) for k, v in ops.items() if k != "const")),
        "weight_dtypes": dict(weights),
    }


def _program(path):
    """The saved package's ML program as coremltools' Python MIL, weights included (coremltools loads a package
    this way to rewrite it; no Core ML runtime involved)."""
    with quiet():
        import coremltools as ct
        from coremltools.converters.mil.frontend.milproto import load as milproto

        mlmodel = ct.models.MLModel(str(path), skip_model_load=True)
        spec = mlmodel.get_spec()
        return milproto.load(spec, spec.specificationVersion, mlmodel.weights_dir)


def _bits(op) -> int | None:
    """The bit width a compressed-weight op stores its values in: the integer type of quantized data, or
    log2 of a LUT's entries (a rank-1 LUT up to iOS 17, [..., entries, vector] from iOS 18)."""
    import math

    if op.op_type == "constexpr_affine_dequantize":
        return op.quantized_data.dtype.get_bitwidth()
    if op.op_type == "constexpr_blockwise_shift_scale":
        return op.data.dtype.get_bitwidth()
    if op.op_type == "constexpr_lut_to_dense":
        shape = op.lut.shape
        return round(math.log2(shape[0] if len(shape) == 1 else shape[-2]))
    return None


def compression(path) -> dict:
    """How a saved package's weights are stored, read from its program: ``weights`` (per constexpr op type, how
    many and their bit widths), ``activation_quantize_ops`` (Core ML ``quantize`` ops) and
    ``float_weights_above_threshold`` (float constants of more than :data:`WEIGHT_THRESHOLD` elements that
    feed the model directly, i.e. weights left uncompressed)."""
    import numpy as np

    with quiet():
        from coremltools.converters.mil.mil import types

    kinds: dict[str, dict] = {}
    quantize = 0
    left_float = []
    for op in _program(path).functions["main"].operations:
        if op.op_type.startswith("constexpr_"):
            entry = kinds.setdefault(op.op_type, {"count": 0, "bits": []})
            entry["count"] += 1
            bits = _bits(op)
            if bits is not None and bits not in entry["bits"]:
                entry["bits"] = sorted([*entry["bits"], bits])
        elif op.op_type == "quantize":
            quantize += 1
        elif op.op_type == "const":
            var = op.outputs[0]
            if isinstance(var.val, np.ndarray) and types.is_float(var.dtype) and var.val.size > WEIGHT_THRESHOLD \
                    and not any(child.op_type.startswith("constexpr_") for child in var.child_ops):
                left_float.append(var.name)
    return {"weights": dict(sorted(kinds.items())), "activation_quantize_ops": quantize,
            "float_weights_above_threshold": sorted(left_float)}


def _compression_problems(path, manifest) -> tuple[list[str], dict]:
    """Whether the package holds the compressed weights its manifest's --quantize mode makes (op types, bit
    width, nothing big left float but --keep-float layers, activation quantization for w8a8), and agrees with
    what the export recorded; the problems, and the facts for verify's reason."""
    mode = manifest.quantization.mode
    if mode not in EXPECTED_COMPRESSION:
        return [f"--quantize {mode} is not a Core ML mode"], {}
    try:
        found = compression(path)
    except Exception as exc:  # noqa: BLE001 - weights coremltools cannot read are the finding
        return [f"the compressed weights do not load ({type(exc).__name__}: {exc})"], {}
    op_types, bits = EXPECTED_COMPRESSION[mode]
    problems = []
    weights = found["weights"]
    ours = {k: v for k, v in weights.items() if k in op_types}
    others = {k: v for k, v in weights.items() if k not in op_types}
    if not ours:
        problems.append(f"no {' or '.join(op_types)} in the package: its weights are not compressed for --quantize "
                        f"{mode}")
    wrong_bits = sorted({b for v in ours.values() for b in v["bits"]} - {bits})
    if wrong_bits:
        problems.append(f"{mode} stores {bits}-bit weights; the package has {wrong_bits}-bit ones")
    if others:
        problems.append(f"{mode} makes no {', '.join(others)}, the package has {others}")
    if mode == "w8a8" and not found["activation_quantize_ops"]:
        problems.append("w8a8 without activation quantize ops")
    kept = set((manifest.details.get("compression") or {}).get("keep_float_weights", []))
    left = [name for name in found["float_weights_above_threshold"] if _weight_key(name) not in kept]
    if left:
        problems.append(f"{len(left)} weight(s) of more than {WEIGHT_THRESHOLD} elements left float ({left[0]}, ...)")
    recorded = manifest.details.get("compression")
    if recorded is not None:
        for key in ("weights", "activation_quantize_ops"):
            if key in recorded and recorded[key] != found[key]:
                problems.append(f"compressed {key.replace('_', ' ')} {found[key]}, the manifest says {recorded[key]}")
    facts = {"compressed weights": ", ".join(f"{v['count']} {k} ({'/'.join(map(str, v['bits']))}-bit)"
                                             for k, v in weights.items()) or "none"}
    if mode == "w8a8":
        facts["activation quantize ops"] = found["activation_quantize_ops"]
    estimate = manifest.details.get("weight_compression_estimate")
    if estimate and not (estimate.get("metrics") or {}).get("finite", False):
        facts["accuracy estimate at export"] = "NaN or Inf in the output of the estimate"
    elif estimate:
        m = estimate["metrics"]
        why = "; ".join(estimate.get("problems", []))
        verdict = {True: f"within the {estimate.get('tolerance_class')} tolerances",
                   False: f"outside the {estimate.get('tolerance_class')} tolerances ({why})",
                   None: f"not judged ({why})"}[estimate.get("within_tolerance")]
        sqnr = "inf" if m.get("sqnr_db") is None else f"{m['sqnr_db']:.1f}"
        facts["accuracy estimate at export"] = (
            f"(measured off-device) {estimate.get('output')} cosine {m['cosine']:.5f}, SQNR {sqnr} dB, "
            f"top-1 agreement {m['top1_agreement']:.2f} against the fp32 PyTorch model on {estimate.get('inputs')}, "
            f"{verdict}; "
            f"{estimate.get('summary', estimate.get('method'))}, not Core ML's fp16 arithmetic")
    return problems, facts


def image_preprocessing(path) -> dict | None:
    """What the package does to its image input's pixels before the first conv, read from its program (no Core
    ML runtime needed): ``color`` (the ImageType's color space), per-channel ``scale`` and ``bias`` of the affine
    map ``pixel * scale + bias`` the ops between the input and the first conv compute (coremltools writes an
    ImageType's scale and bias as ``mul`` and ``add`` ops on the input), and ``first_conv``: the op name and its
    ``weight`` and ``bias`` as float32 arrays (None where one is not a constant), or None if something other
    than a cast, a quantize/dequantize pair or a constant ``mul``/``add``/``sub`` comes between the input and a
    conv (``stopped_at`` names it). None for a package without an image input."""
    import numpy as np

    with quiet():
        import coremltools as ct
        from coremltools.proto import FeatureTypes_pb2

    spec = ct.utils.load_spec(str(path))
    images = [f for f in spec.description.input if f.type.WhichOneof("Type") == "imageType"]
    if not images:
        return None
    (image,) = images
    color = FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(image.type.imageType.colorSpace)
    channels = 1 if color == "GRAYSCALE" else 3
    function = _program(path).functions["main"]
    chain = function.inputs[image.name]
    scale, bias = np.ones(channels), np.zeros(channels)
    found = {"color": color, "first_conv": None, "stopped_at": None}

    def constant(var):
        value = None if var is None else var.val
        return None if value is None else np.broadcast_to(np.asarray(value, np.float64).reshape(-1), (channels,))

    for op in function.operations:
        inputs = [v for v in op.inputs.values() if not isinstance(v, (list, tuple))]
        if not any(v is chain for v in inputs):
            continue
        x, y = op.inputs.get("x"), op.inputs.get("y")
        other = y if x is chain else x
        c = constant(other) if op.op_type in ("mul", "add", "sub") else None
        if (op.op_type == "cast" and x is chain) or \
                (op.op_type in ("quantize", "dequantize") and op.inputs.get("input") is chain):
            pass  # a dtype change, or w8a8's int8 round trip of the activation (identity up to rounding)
        elif op.op_type == "conv" and x is chain:
            found["first_conv"] = {"name": op.name, "weight": _constant_value(op.inputs.get("weight")),
                                   "bias": _constant_value(op.inputs.get("bias"))}
            break
        elif c is not None and op.op_type == "mul":
            scale, bias = scale * c, bias * c
        elif c is not None and op.op_type == "add":
            bias = bias + c
        elif c is not None and op.op_type == "sub":
            scale, bias = (scale, bias - c) if x is chain else (-scale, c - bias)
        else:
            found["stopped_at"] = f"{op.op_type} {op.name}"
            break
        chain = op.outputs[0]
    return {**found, "scale": scale.tolist(), "bias": bias.tolist()}


@functools.lru_cache(maxsize=2)
def _image_preprocessing_once(path: str, mtime_ns: int, size: int):
    return image_preprocessing(path)


def _constant_value(var):
    """A weight's values as float32: a constant's, or a compressed constant's decompressed ones; None otherwise."""
    import numpy as np

    if var is None:
        return None
    value = var.val
    if value is None and var.op is not None and var.op.op_type.startswith("constexpr_"):
        with contextlib.suppress(Exception):  # an op whose decompression coremltools cannot do: not checked
            value = var.op.materialized_val_inference()
    return None if value is None else np.asarray(value, np.float32)


def _preprocessing_problems(path, manifest) -> tuple[list[str], dict, dict]:
    """Whether the normalization a package with ``preprocessing.applied == "in-model"`` does matches its manifest:
    the image input's color space, its scale and its bias (``-mean``; the sign matters), and a first conv to fold
    1/std into. The problems, the facts, and the first conv's weights for :func:`reference_problems`."""
    import numpy as np

    pre = manifest.preprocessing
    stat = Path(path).stat()  # the structural check and weights_for_reference read the program once
    found = _image_preprocessing_once(str(path), stat.st_mtime_ns, stat.st_size)
    if found is None:
        return ["the manifest says normalization is built into the model, but the package has no image input"], {}, {}
    problems = []
    if found["color"] != pre.color:
        problems.append(f"the image input's color space is {found['color']}, the manifest says {pre.color}")
    channels = len(found["scale"])
    want_scale, want_bias = np.full(channels, pre.scale), -np.asarray(pre.mean[:channels], np.float64)
    if not np.allclose(found["scale"], want_scale, rtol=1e-5, atol=0):
        problems.append(f"the image input scales pixels by {_numbers(found['scale'])}, the manifest says "
                        f"{pre.scale:.6g}")
    if not np.allclose(found["bias"], want_bias, rtol=1e-5, atol=1e-7):
        problems.append(f"the image input's bias is {_numbers(found['bias'])}; the manifest's mean "
                        f"{_numbers(pre.mean)} needs {_numbers(want_bias)}")
    conv = found["first_conv"]
    if conv is None:
        problems.append("no conv takes the image input directly, so 1/std cannot have been folded into one "
                        f"({found['stopped_at'] or 'the input feeds no conv'})")
    facts = {"image preprocessing": f"{found['color']}, pixel * {_numbers(found['scale'])} + {_numbers(found['bias'])}"}
    arrays = {}
    if conv is not None:
        arrays = {f"first_conv.{k}": conv[k] for k in ("weight", "bias") if conv[k] is not None}
    return problems, facts, arrays


def _numbers(values) -> str:
    values = [float(v) for v in values]
    return f"{values[0]:.6g}" if len(set(values)) == 1 else "[" + ", ".join(f"{v:.6g}" for v in values) + "]"


def weights_for_reference(path, manifest) -> dict:
    """The package's weights that :func:`reference_problems` checks against the reference model (run beside
    the structural check, where the runtime library lives): the first conv's, when normalization is built in."""
    if manifest.preprocessing.applied != "in-model":
        return {}
    return _preprocessing_problems(path, manifest)[2]


#: how far the package's first conv weights may be from the reference's divided by std, relative to the
#: largest reference weight: fp16 storage moves a weight by at most 2^-11 of itself, int8 per-channel (w8a8)
#: by 1/254 of its channel's largest; a missing 1/std fold moves them by a factor 1/std (4.4 for ImageNet's)
FOLDED_WEIGHT_TOLERANCE = 0.02


def reference_problems(arrays: dict, source, manifest) -> list[str]:
    """Whether 1/std is folded into the package's first conv: its weights must be the reference model's
    (reparameterized without the fold) divided by std per input channel, and its bias the reference's."""
    import numpy as np
    import torch

    if "first_conv.weight" not in arrays:
        return []
    conv = next(m for m in source.deploy_model().modules() if isinstance(m, torch.nn.Conv2d))
    std = np.asarray(manifest.preprocessing.std, np.float32).reshape(1, -1, 1, 1)
    expected = {"weight": conv.weight.detach().numpy() / std[:, :conv.weight.shape[1]],
                "bias": None if conv.bias is None else conv.bias.detach().numpy()}
    problems = []
    for key in ("weight", "bias"):
        got, want = arrays.get(f"first_conv.{key}"), expected[key]
        if got is None or want is None:
            continue
        if got.shape != want.shape:
            problems.append(f"the first conv's {key} has shape {list(got.shape)}, the reference's {list(want.shape)}")
            continue
        error, bar = float(np.max(np.abs(got - want))), FOLDED_WEIGHT_TOLERANCE * float(np.max(np.abs(want)))
        if not error <= bar:
            what = ("weights are not the reference's divided by the manifest's std (1/std is not folded in, or "
                    "folded wrongly)" if key == "weight" else "bias is not the reference's")
            problems.append(f"the first conv's {what}: largest difference {error:.4g}, allowed {bar:.4g}")
    return problems


#: compute-unit settings of a profile's ``compute_units`` -> coremltools ``ComputeUnit`` names
COMPUTE_UNITS = {"cpu_only": "CPU_ONLY", "cpu_and_gpu": "CPU_AND_GPU", "cpu_and_ne": "CPU_AND_NE", "all": "ALL"}


def can_run() -> bool:
    """Core ML predicts only on Apple platforms."""
    import platform

    return platform.system() == "Darwin"


def cannot_run_here(path, manifest) -> str | None:
    return None if can_run() else "Core ML predicts only on macOS/iOS"


def structural_problems(path, manifest) -> tuple[list[str], dict]:
    """Check a package against its manifest without running it (spec, I/O names, shapes and types, deployment
    target, op histogram, weight precision): the problems found, and the spec facts that were checked."""
    try:
        info = describe(path)
    except Exception as exc:  # noqa: BLE001 - a package coremltools cannot read is the finding
        return [f"the spec does not load ({type(exc).__name__}: {exc})"], {}
    problems = []
    inputs = info["inputs"]
    names, expected = [i["name"] for i in inputs], [t.name for t in manifest.inputs]
    if names != expected:
        problems.append(f"inputs {names}, the manifest says {expected}")
    for found, spec in zip(inputs, manifest.inputs, strict=False):  # a count mismatch is reported above
        if spec.kind == "image":
            got = (found["type"], found.get("height"), found.get("width"))
            want = ("imageType", spec.shape[2], spec.shape[3])
        else:
            got = (found["type"], tuple(found.get("shape", ())), found.get("dtype"))
            want = ("multiArrayType", tuple(spec.shape), "FLOAT32")
        if got != want:
            problems.append(f"input {spec.name} is {got}, the manifest says {want}")
    outputs = [o["name"] for o in info["outputs"]]
    if outputs != [t.name for t in manifest.outputs]:
        problems.append(f"outputs {outputs}, the manifest says {[t.name for t in manifest.outputs]}")
    details = manifest.details
    for key in ("minimum_deployment_target", "ops", "weight_dtypes"):
        if key in details and info[key] != details[key]:
            problems.append(f"{key} is {info[key]}, the manifest says {details[key]}")
    expected_weights = {"fp16": "FLOAT16", "fp32": "FLOAT32"}.get(manifest.precision)
    if manifest.quantization is None and expected_weights and set(info["weight_dtypes"]) - {expected_weights}:
        problems.append(f"{manifest.precision} package with weights {info['weight_dtypes']}")
    facts = {"deployment target": info["minimum_deployment_target"], "ops": sum(info["ops"].values()),
             "weights": info["weight_dtypes"]}
    compressed = sorted(op for op in info["ops"] if op.startswith("constexpr_"))
    if manifest.quantization is None and compressed:
        problems.append(f"compressed weights ({', '.join(compressed)}) in a package its manifest says is not quantized")
    if manifest.quantization is not None:
        found, more = _compression_problems(path, manifest)
        problems.extend(found)
        facts.update(more)
    if manifest.preprocessing.applied == "in-model":
        try:
            found, more, _ = _preprocessing_problems(path, manifest)
        except Exception as exc:  # noqa: BLE001 - a program coremltools cannot read is the finding
            found, more = [f"the program does not load ({type(exc).__name__}: {exc})"], {}
        problems.extend(found)
        facts.update(more)
    return problems, facts


def load(path, manifest=None, threads=None, compute_units: str = "cpu_only"):
    """A runner through coremltools ``predict`` on macOS, for one compute-unit setting; elsewhere Core ML
    cannot run, and this says so. An image input takes uint8 (N, 3, H, W) pixels; a classifier's output is
    its probabilities in label order."""
    if not can_run():
        raise UsageError("Core ML models run only on macOS/iOS; on this machine only their structure can be "
                         "checked")
    import coremltools as ct
    import numpy as np
    from PIL import Image

    from .base import Runner

    model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, COMPUTE_UNITS[compute_units]))
    info = describe(path)
    (inp,) = info["inputs"]
    image = inp["type"] == "imageType"
    classifier = info["classifier"]

    def run(x: np.ndarray) -> np.ndarray:
        feeds = ([Image.fromarray(np.ascontiguousarray(p.transpose(1, 2, 0), dtype=np.uint8)) for p in x]
                 if image else [np.ascontiguousarray(x, dtype=np.float32)])
        outs = []
        for feed in feeds:
            result = model.predict({inp["name"]: feed})
            if classifier:
                probs = result[classifier["probabilities"]]
                outs.append(np.asarray([[probs[label] for label in classifier["labels"]]], dtype=np.float32))
            else:
                outs.append(np.asarray(result["logits"], dtype=np.float32))
        return np.concatenate(outs)

    shape = (1, 3, inp["height"], inp["width"]) if image else tuple(inp["shape"])
    return Runner(run, f"coremltools {ct.__version__} ({compute_units})", inp["name"], shape,
                  "uint8" if image else "float32")
