"""ONNX: opset 18 through torch's dynamo exporter, one self-contained file; run with ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..manifest import Quantization, TensorSpec
from ._quiet import quiet
from dataclasses import dataclass

from .base import Backend, BackendResult, QuantMode, Runner, option, register

NAME = "onnx"
SUFFIX = ".onnx"
#: what ``load`` imports: a host benchmark imports it before timing the load
RUNTIME_MODULES = ("onnxruntime",)



def export(job, out: Path) -> BackendResult:
    import onnx
    import torch

    opset = job.profile.export.opset
    dynamic = job.backend_options.dynamic_batch
    example = job.example_input()
    program = job.exported_program(example, dynamic_batch=dynamic)
    with quiet():
        torch.onnx.export(program, (example,), str(out), dynamo=True, opset_version=opset,
                          input_names=["image"], output_names=["logits"], external_data=False,
                          optimize=True, verbose=False)
    model = onnx.load(str(out))
    if dynamic:  # give the dynamic axis a readable name
        for value in (*model.graph.input, *model.graph.output):
            value.type.tensor_type.shape.dim[0].dim_param = "batch"
        onnx.save(model, str(out))
    onnx.checker.check_model(model)
    written = _default_opset(model)
    if written != opset:  # the exporter writes 18 for anything lower, and says so only in a log line
        raise RuntimeError(f"the ONNX exporter wrote opset {written}, not the profile's opset {opset}")
    quantization = None
    if job.options.quantize:
        quantization = _quantize(job, out)
        model = onnx.load(str(out))
    h, w = job.resolution
    axes = (0,) if dynamic else ()
    return BackendResult(
        inputs=(TensorSpec("image", (job.options.batch, 3, h, w), "float32", "NCHW", dynamic_axes=axes),),
        outputs=(TensorSpec("logits", (job.options.batch, job.source.num_classes), "float32", "NC",
                            dynamic_axes=axes),),
        details={"opset": _default_opset(model), "ops": _op_histogram(model)}, quantization=quantization,
    )


def _default_opset(model) -> int | None:
    """The opset of the default ONNX domain, as the file itself records it."""
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _quantize(job, out: Path) -> Quantization:
    """Quantize the fp32 model at ``out`` in place with onnxruntime.quantization: ``int8-dynamic`` (int8
    weights, activations quantized at run time) or ``int8`` (QDQ, int8 per-channel weights and int8
    activations with ranges calibrated on the job's calibration inputs). Both after ORT's pre-processing
    (shape inference and graph optimization), as its documentation recommends."""
    import tempfile

    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    mode = job.options.quantize
    with tempfile.TemporaryDirectory() as folder, quiet():
        prepared = Path(folder) / "prepared.onnx"
        quant_pre_process(str(out), str(prepared))
        exclude = _nodes_of_layers(onnx.load(str(prepared)), job.options.keep_float)
        if mode == "int8-dynamic":
            quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8, nodes_to_exclude=exclude)
            return job.quantization()
        calibration = job.calibration()

        class Reader(CalibrationDataReader):
            def __init__(self):
                self._chunks = ({"image": x} for x in job.calibration_batches(calibration))

            def get_next(self):
                return next(self._chunks, None)

        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile,
                  "distribution": CalibrationMethod.Distribution}[job.calibration_method()]
        quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                        calibrate_method=method, reduce_range=job.backend_options.reduce_range)
    return job.quantization(calibration)


def _nodes_of_layers(model, layers: tuple[str, ...]) -> list[str]:
    """The names of the nodes that the deploy model's modules ``layers`` became, with anything inside them (the
    dynamo exporter records each node's module path in its ``pkg.torch.onnx.name_scopes``), and the names
    ORT's quantizer gives a Gemm once it has rewritten it into ``<name>_MatMul`` and ``<name>_Add``."""
    import ast

    found: dict[str, list[str]] = {layer: [] for layer in layers}
    for node in model.graph.node:
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "")
        try:
            names = set(ast.literal_eval(scopes)) if scopes else set()
        except (ValueError, SyntaxError):
            continue
        for layer in names.intersection(found):
            found[layer].append(node.name)
            if node.op_type == "Gemm":
                found[layer] += [f"{node.name}_MatMul", f"{node.name}_Add"]
    missing = [layer for layer, nodes in found.items() if not nodes]
    if missing:
        raise RuntimeError(f"--keep-float {missing[0]}: no ONNX node records this layer")
    return [name for nodes in found.values() for name in nodes]


def _op_histogram(model) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def cannot_run_here(path, manifest) -> str | None:
    return None  # the runtime is a pip package on every platform shvit-edge runs on


def load(path, manifest=None, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    name = first.name

    def run(x: np.ndarray) -> np.ndarray:
        return session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    shape = tuple(d if isinstance(d, int) else None for d in first.shape)
    element = first.type.removeprefix("tensor(").removesuffix(")")
    dtype = {"float": "float32", "double": "float64"}.get(element, element)  # ONNX names -> numpy names
    return Runner(run, f"onnxruntime {ort.__version__}", name, shape, dtype)


@dataclass(frozen=True)
class OnnxOptions:
    dynamic_batch: bool = option(False, flag="--dynamic-batch", help="ONNX: a dynamic batch dimension.")
    reduce_range: bool = option(False, flag="--reduce-range",
                                help="ONNX --quantize int8: ORT's reduce_range (7-bit weights), for x86 CPUs "
                                     "without VNNI.")


@register
class OnnxBackend(Backend):
    """ONNX opset 18 (torch's dynamo exporter), run with ONNX Runtime; quantized with onnxruntime.quantization."""

    name = NAME
    title = "ONNX"
    suffix = SUFFIX
    extra = "onnx"
    libraries = ("onnx", "onnxruntime", "onnxscript")
    runtime_modules = RUNTIME_MODULES
    requires = ("onnx", "onnxruntime", "onnxscript")
    default_profile = "host-onnx"
    quantization_modes = (QuantMode("int8", "int8", calibrated=True), QuantMode("int8-dynamic", "int8"))
    #: onnxruntime's CalibrationMethod
    calibration_methods = ("minmax", "entropy", "percentile", "distribution")
    dfq_default = "none"
    augments_calibration = True
    rank = 3
    export_cost = 1
    colour = "#2ca02c"
    Options = OnnxOptions

    def check(self, profile, common, options) -> None:
        if options.reduce_range and common.quantize != "int8":
            from ..errors import UsageError

            raise UsageError("--reduce-range applies to --quantize int8 on the onnx target")

    def artifact_tags(self, profile, common, options, precision: str) -> tuple[str, ...]:
        return ("dynbatch",) if options.dynamic_batch else ()

    def export(self, job, out) -> BackendResult:
        return export(job, out)

    def load(self, path, manifest=None, threads=None, setting=None) -> Runner:
        return load(path, manifest, threads)
