"""TFLite / LiteRT: a ``.tflite`` converted with litert-torch, run with ai-edge-litert's Interpreter.

The signature ``serving_default`` takes ``image`` and returns ``logits``. ``--layout nhwc`` makes the input
(N, H, W, 3), so Android camera code feeds it without a transpose (the converter folds the permute into the
graph). The batch size is fixed at conversion: LiteRT's ``resize_tensor_input`` on a batch-1 model runs but
gives wrong answers for all but the first image (measured), so export the batch you need.

``--quantize`` rewrites the converted float model with ai-edge-quantizer (see :func:`_quantize`); the
artifact keeps the float32 ``image`` in and ``logits`` out of the fp32 one, so apps and verify feed it the same.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..manifest import Quantization, TensorSpec
from ._quiet import quiet
from dataclasses import dataclass

from .base import Backend, BackendResult, QuantMode, Runner, option, register

NAME = "tflite"
SUFFIX = ".tflite"
#: what ``load`` imports: a host benchmark imports it before timing the load
RUNTIME_MODULES = ("ai_edge_litert.interpreter",)
SIGNATURE = "serving_default"



def _named(model):
    import torch

    class Named(torch.nn.Module):
        """Keyword input ``image`` and a dict output ``logits``: litert-torch names the signature after them."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, image):
            return {"logits": self.inner(image)}

    return Named(model).eval()


def export(job, out: Path) -> BackendResult:
    layout = job.backend_options.layout
    example = job.example_input(layout=layout)
    model = _named(job.deploy_model(layout=layout))
    with quiet():
        import litert_torch

        converted = litert_torch.signature(SIGNATURE, model, sample_kwargs={"image": example}).convert()
        converted.export(str(out))
    h, w = job.resolution
    batch = job.options.batch
    shape = (batch, 3, h, w) if layout == "nchw" else (batch, h, w, 3)
    details = {"signature": SIGNATURE}
    quantization = None
    if job.options.quantize:
        quantization = _quantize(job, out, model)
        details["tensor_dtypes"] = tensor_dtypes(out)
    details["ops"] = op_histogram(out)
    return BackendResult(
        inputs=(TensorSpec("image", shape, "float32", layout.upper()),),
        outputs=(TensorSpec("logits", (batch, job.source.num_classes), "float32", "NC"),),
        details=details, quantization=quantization,
    )


#: TFLite ops with a constant weight (input 1) that a deploy-model conv or linear becomes
_WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "CONV_2D_TRANSPOSE")


def _quantize(job, out: Path, model) -> Quantization:
    """Quantize the converted float model at ``out`` in place with ai-edge-quantizer, the maintained
    post-training quantizer for .tflite files (litert-torch's own quantization either hands its recipe to it or
    goes through PT2E):

    - ``fp16``: weight-only float casting, fp16 weights dequantized to fp32 at load; float compute.
    - ``int8-dynamic``: the ``dynamic_wi8_afp32`` recipe: per-channel int8 weights, activations float in the
      model and quantized on the fly by the kernels.
    - ``int8``: the ``static_wi8_ai8`` recipe (per-channel int8 weights, int8 activations, ranges calibrated on
      the job's calibration inputs), with two changes: the model's input and output stay float32 (a QUANTIZE
      after ``image``, a DEQUANTIZE before ``logits``), and the op that produces ``logits`` (the classifier's
      fully-connected) keeps int8 weights but 16-bit activations. Int8 logits step by range/255 (~0.03 for S1),
      as much as the top-1/top-2 margin of real images, and flipped four of the fixture's five top-1s (measured).

    ``--keep-float`` layers (deploy-model module names) are left unquantized: see :func:`_ops_of_layers`."""
    mode = job.options.quantize
    float_model = out.read_bytes()
    with quiet():
        from ai_edge_quantizer import quantizer, recipe
        from ai_edge_quantizer.algorithm_manager import AlgorithmName
        from ai_edge_quantizer.qtyping import TFLOperationName

        if mode == "fp16":
            quant = quantizer.Quantizer(float_model)
            quant.add_weight_only_config(".*", TFLOperationName.ALL_SUPPORTED, 16,
                                         algorithm_key=AlgorithmName.FLOAT_CASTING)
        elif mode == "int8-dynamic":
            quant = quantizer.Quantizer(float_model, recipe.dynamic_wi8_afp32())
        elif mode == "int8":
            algorithm = {"minmax": AlgorithmName.MIN_MAX_UNIFORM_QUANT, "octav": AlgorithmName.OCTAV,
                         "mse": AlgorithmName.MSE}[job.calibration_method()]
            quant = quantizer.Quantizer(float_model, recipe.static_wi8_ai8(algorithm_key=algorithm))
            for io in (TFLOperationName.INPUT, TFLOperationName.OUTPUT):
                quant.update_quantization_recipe(".*", io, algorithm_key=AlgorithmName.NO_QUANTIZE)
            for regex, op in _logits_ops(float_model):
                quant.add_static_config(regex, TFLOperationName(op), activation_num_bits=16, weight_num_bits=8)
        else:  # export checks the mode against the profile first
            raise ValueError(f"unknown TFLite quantization mode {mode!r}")
        for regex, op in _ops_of_layers(float_model, model, job.deploy_model(), job.options.keep_float):
            quant.update_quantization_recipe(regex, TFLOperationName(op), algorithm_key=AlgorithmName.NO_QUANTIZE)
        calibration = qsvs = None
        if quant.need_calibration:
            import torch

            calibration = job.calibration()
            samples = _CalibrationSamples(job, calibration)
            qsvs = quant.calibrate({SIGNATURE: samples}, num_threads=max(1, torch.get_num_threads()))
        result = quant.quantize(qsvs, enable_progress_report=False)
    out.write_bytes(bytes(result.quantized_model))
    return job.quantization(calibration)


class _CalibrationSamples:
    """The calibration inputs as ai-edge-quantizer's signature inputs, in the artifact's batch and layout.

    Re-iterable: the calibrator first counts the samples (a pass through them, silent here) and then
    calibrates on them (the passes after the first report progress)."""

    def __init__(self, job, calibration):
        self.job, self.calibration, self.passes = job, calibration, 0

    def __iter__(self):
        from ..quantize import calibration_batches

        self.passes += 1
        if self.passes == 1:
            chunks = calibration_batches(self.calibration, self.job.options.batch)
        else:
            chunks = self.job.calibration_batches(self.calibration)
        nhwc = self.job.backend_options.layout == "nhwc"
        for x in chunks:
            yield {"image": np.ascontiguousarray(x.transpose(0, 2, 3, 1) if nhwc else x)}


def _op_scopes(float_model: bytes):
    """(flatbuffer model, [(subgraph, op, op name, regex matching exactly the op's ai-edge-quantizer scope)]).

    ai-edge-quantizer picks the ops a recipe entry applies to by ``re.search`` of its regex in the op's scope,
    the op's output tensor names joined by ``;``: an anchored, escaped scope picks that op alone."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as tfl

    flat = tfl.read_model(float_model)
    ops = []
    for graph in flat.subgraphs:
        for op in graph.operators:
            name = tfl.TFL_OP_CODE_TO_NAME.get(flat.operatorCodes[op.opcodeIndex].builtinCode)
            if name is not None:
                ops.append((graph, op, str(getattr(name, "value", name)),
                            f"^{re.escape(tfl.get_op_scope(op, graph.tensors))}$"))
    return flat, ops


def _logits_ops(float_model: bytes) -> list[tuple[str, str]]:
    """(scope regex, op name) of the fully-connected ops that write a model output (the classifier head)."""
    flat, ops = _op_scopes(float_model)
    main = flat.subgraphs[0]
    return [(regex, name) for graph, op, name, regex in ops
            if graph is main and name == "FULLY_CONNECTED" and set(op.outputs) & set(main.outputs)]


def _ops_of_layers(float_model: bytes, model, deploy, layers: tuple[str, ...]) -> list[tuple[str, str]]:
    """(scope regex, op name) of the conv / fully-connected ops that the deploy model's modules ``layers``
    became (see :func:`_ops_by_layer`)."""
    return [entry for matched in _ops_by_layer(float_model, model, deploy, layers).values() for entry in matched]


def _ops_by_layer(float_model: bytes, model, deploy, layers) -> dict[str, list[tuple[str, str]]]:
    """Per layer of ``layers`` (deploy-model module names), the (scope regex, op name) of the ops it became.

    litert-torch names every tensor after the module hierarchy of the torch op that made it, each level the
    module's class path and its attribute name from the converted root, ``;``-terminated
    (``.../shvit_edge.models.shvit.FFN_m/torch.nn.modules.conv.Conv2d_pw1;``); a layer's weight tensor carries
    its full hierarchy. Op scopes cannot be matched by name: fusion joins several hierarchies into one output
    name and the last op's output is renamed after the signature. So the op is found by its weight's name and
    pinned by its exact scope. ``model`` is the module that was converted, ``deploy`` the deploy model inside
    it (the names' root)."""
    if not layers:
        return {}
    paths = {id(module): path for path, module in model.named_modules()}
    hierarchy = {layer: _hierarchy(model, paths[id(deploy.get_submodule(layer))]) for layer in layers}
    _, ops = _op_scopes(float_model)
    found: dict[str, list[tuple[str, str]]] = {layer: [] for layer in layers}
    for graph, op, name, regex in ops:
        if name not in _WEIGHTED_OPS or len(op.inputs) < 2 or op.inputs[1] < 0:
            continue
        weight = graph.tensors[op.inputs[1]].name.decode("utf-8")
        for layer in layers:
            if hierarchy[layer] in weight:
                found[layer].append((regex, name))
    missing = [layer for layer, matched in found.items() if not matched]
    if missing:
        raise RuntimeError(f"--keep-float {missing[0]}: no TFLite op carries this layer's weights")
    return found


def _hierarchy(root, path: str) -> str:
    """The module hierarchy litert-torch writes into tensor names for the module at ``path`` under ``root``:
    the root's class, then per level ``<class>_<attribute>``, joined by ``/`` and ended by ``;``."""

    def cls(module) -> str:
        kind = type(module)
        return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"

    levels, module = [cls(root)], root
    for part in path.split("."):
        module = module.get_submodule(part)
        levels.append(f"{cls(module)}_{part}")
    return "/".join(levels) + ";"


def tensor_dtypes(path) -> dict[str, dict[str, int]]:
    """How many tensors of the main subgraph are of each type: ``weights`` (constants: weights, biases,
    quantization constants) and ``activations`` (everything computed, the input and output included)."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    names = _tensor_type_names()
    counts: dict[str, dict[str, int]] = {"weights": {}, "activations": {}}
    for tensor in model.subgraphs[0].tensors:
        data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
        kind = counts["weights" if data is not None and len(data) else "activations"]
        name = names.get(tensor.type, str(tensor.type))
        kind[name] = kind.get(name, 0) + 1
    return {key: dict(sorted(value.items())) for key, value in counts.items()}


def _tensor_type_names() -> dict[int, str]:
    from ai_edge_litert import schema_py_generated as schema

    return {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}


def op_histogram(path) -> dict[str, int]:
    """Op counts of the main subgraph, read with LiteRT's own flatbuffer tools."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    counts: dict[str, int] = {}
    for op in model.subgraphs[0].operators:
        name = flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def cannot_run_here(path, manifest) -> str | None:
    return None  # the runtime is a pip package on every platform shvit-edge runs on


def load(path, manifest=None, threads: int | None = None):
    with quiet():
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path), num_threads=threads or 1)
    runner = interpreter.get_signature_runner(SIGNATURE)
    (name, detail), = runner.get_input_details().items()

    def run(x: np.ndarray) -> np.ndarray:
        # copy: the runner's arrays alias the interpreter's buffers
        return np.array(runner(**{name: np.ascontiguousarray(x, dtype=np.float32)})["logits"], copy=True)

    from importlib.metadata import version

    shape = tuple(int(d) for d in detail["shape"])
    return Runner(run, f"ai-edge-litert {version('ai-edge-litert')}", name, shape, np.dtype(detail["dtype"]).name)


@dataclass(frozen=True)
class TFLiteOptions:
    layout: str = option("nchw", flag="--layout", choices=("nchw", "nhwc"),
                         help="TFLite input layout; nhwc feeds Android camera buffers without a transpose.")


@register
class TFLiteBackend(Backend):
    """LiteRT (TFLite) flatbuffers through litert-torch, run with ai-edge-litert; quantized with litert-torch and
    ai-edge-quantizer."""

    name = NAME
    title = "TFLite"
    suffix = SUFFIX
    extra = "tflite"
    libraries = ("litert-torch", "ai-edge-litert", "ai-edge-quantizer")
    runtime_modules = RUNTIME_MODULES
    requires = ("litert_torch", "ai_edge_litert")
    default_profile = "android-arm64-tflite"
    quantization_modes = (QuantMode("fp16", "fp16"), QuantMode("int8-dynamic", "int8"),
                          QuantMode("int8", "int8", calibrated=True))
    #: ai-edge-quantizer's algorithm for the weights (activations are min/max in every one)
    calibration_methods = ("minmax", "octav", "mse")
    dfq_default = "none"
    augments_calibration = True
    rank = 2
    export_cost = 3
    colour = "#ff7f0e"
    Options = TFLiteOptions

    def check(self, profile, common, options) -> None:
        if options.layout not in profile.export.layouts:
            from ..errors import UsageError

            raise UsageError(f"target {profile.name} does not offer layout {options.layout}")

    def artifact_tags(self, profile, common, options, precision: str) -> tuple[str, ...]:
        return ("nhwc",) if options.layout == "nhwc" else ()

    def export(self, job, out) -> BackendResult:
        return export(job, out)

    def load(self, path, manifest=None, threads=None, setting=None) -> Runner:
        return load(path, manifest, threads)
