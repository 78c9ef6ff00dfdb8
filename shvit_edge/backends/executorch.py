"""ExecuTorch: a ``.pte`` lowered to the XNNPACK delegate (Android/iOS CPU) or ExecuTorch's Core ML backend.

``torch.export`` -> ``to_edge_transform_and_lower(partitioner=[...])`` -> ``to_executorch()``. The manifest's
``delegation`` section records the partitions and every op left outside a delegate (those run on portable
kernels, with a hand-off each time). The deploy form (:class:`~shvit_edge.models.shvit.SHSADeploy`) makes
SHViT a single XNNPACK partition with nothing outside it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ..manifest import TensorSpec
from ._quiet import quiet
from dataclasses import dataclass

from .base import Backend, BackendResult, QuantMode, Runner, option, register

NAME = "executorch"
SUFFIX = ".pte"
#: what ``load`` imports: a host benchmark imports it before timing the load
RUNTIME_MODULES = ("torch", "executorch.runtime")



def _partitioner(delegate: str, precision: str, job):
    if delegate == "xnnpack":
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        return XnnpackPartitioner()
    import coremltools as ct
    from executorch.backends.apple.coreml.compiler import CoreMLBackend
    from executorch.backends.apple.coreml.partition import CoreMLPartitioner

    specs = CoreMLBackend.generate_compile_specs(
        compute_unit=ct.ComputeUnit.ALL, minimum_deployment_target=ct.target.iOS16,
        compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
        model_type=CoreMLBackend.MODEL_TYPE.MODEL)
    return CoreMLPartitioner(compile_specs=specs, lower_full_graph=True)


def delegation_report(edge_program) -> dict:
    """Partitions (delegate calls) by backend and the ops left outside any delegate, from a lowered program
    (before ``to_executorch``, which rewrites the graph into out-variants)."""
    from executorch.exir.lowered_backend_module import get_lowered_submodules

    graph_module = edge_program.exported_program().graph_module
    backends = Counter(lowered.backend_id for _, lowered, _ in get_lowered_submodules(graph_module))
    outside: Counter = Counter()
    for node in graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        name = getattr(node.target, "__name__", str(node.target))
        if "executorch_call_delegate" in name or name == "getitem":
            continue
        outside[str(getattr(node.target, "_name", name)).replace("aten::", "aten.")] += 1
    return {"partitions": sum(backends.values()), "backends": dict(backends),
            "ops_outside": dict(sorted(outside.items())), "ops_outside_total": sum(outside.values())}


def export(job, out: Path) -> BackendResult:
    delegate = job.backend_options.delegate or job.profile.export.delegate or "xnnpack"
    example = job.example_input()
    program = job.exported_program(example)
    quantization = None
    if job.options.quantize:
        program, quantization = _quantize(job, program, example)
    with quiet():
        from executorch.exir import to_edge_transform_and_lower

        edge = to_edge_transform_and_lower(program, partitioner=[_partitioner(delegate, job.precision, job)])
        delegation = delegation_report(edge)
        executorch_program = edge.to_executorch()
    with open(out, "wb") as fh:
        executorch_program.write_to_file(fh)
    h, w = job.resolution
    batch = job.options.batch
    return BackendResult(
        inputs=(TensorSpec("image", (batch, 3, h, w), "float32", "NCHW"),),
        outputs=(TensorSpec("logits", (batch, job.source.num_classes), "float32", "NC"),),
        details={"delegate": delegate, "delegation": delegation, "method": "forward"}, quantization=quantization,
    )


def _quantize(job, program, example):
    """PT2E with ExecuTorch's XNNPACK quantizer, as its own examples do: ``int8`` is static, symmetric
    per-channel int8 weights and int8 activations whose ranges come from the calibration inputs; ``int8-dynamic``
    quantizes the weights and lets XNNPACK quantize activations at run time (one pass over the example input
    sets the weights' observers). ``--keep-float`` layers are filtered out of the annotation. Returns the
    quantized program, re-captured, and the manifest's record."""
    import torch

    with quiet():
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                             get_symmetric_quantization_config)
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    dynamic = job.options.quantize == "int8-dynamic"
    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic)
    if not dynamic and job.calibration_method() == "minmax":  # XNNPACK's config observes with a histogram
        config = _with_activation_observer(config)
    quantizer = XNNPACKQuantizer().set_global(config)
    keep = set(job.options.keep_float)
    if keep:
        quantizer.set_filter_function(lambda node: not _in_layers(node, keep))
    calibration = None if dynamic else job.calibration()
    with torch.no_grad(), quiet():
        prepared = prepare_pt2e(program.module(), quantizer)
        for x in ([example.numpy()] if dynamic else job.calibration_batches(calibration)):
            prepared(torch.from_numpy(x))
        converted = convert_pt2e(prepared)
        program = torch.export.export(converted, (example,))
    return program, job.quantization(calibration)


def _with_activation_observer(config):
    """``config`` with torchao's MinMaxObserver for the activations instead of its HistogramObserver."""
    import dataclasses

    from torchao.quantization.pt2e.observer import MinMaxObserver

    def swapped(spec):
        if spec is None:
            return None
        return dataclasses.replace(spec, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2 ** -12))

    return dataclasses.replace(config, input_activation=swapped(config.input_activation),
                               output_activation=swapped(config.output_activation))


def _in_layers(node, layers: set[str]) -> bool:
    """Whether an exported graph node comes from one of the modules named ``layers`` (or from inside one)."""
    for path, _ in (node.meta.get("nn_module_stack") or {}).values():
        if path in layers:
            return True
    return False


def cannot_run_here(path, manifest) -> str | None:
    """Why this machine's runtime cannot run the program (a delegate it does not have), or None."""
    with quiet():
        from executorch.runtime import Runtime

        registry = Runtime.get().backend_registry
    backends = (manifest.details.get("delegation") or {}).get("backends", {}) if manifest is not None else {}
    missing = [b for b in backends if not registry.is_available(b)]
    if missing:
        return (f"this machine's ExecuTorch runtime has no {', '.join(missing)} (it runs on the devices that "
                "delegate targets)")
    return None


def structural_problems(path, manifest) -> tuple[list[str], dict]:
    """What can be checked of a program without running it: it loads, and its method's input is the
    manifest's."""
    with quiet():
        from executorch.runtime import Runtime

        try:
            meta = Runtime.get().load_program(Path(path)).metadata("forward")
        except Exception as exc:  # noqa: BLE001 - a program the runtime cannot read is the finding
            return [f"the program does not load ({type(exc).__name__}: {exc})"], {}
    info = meta.input_tensor_meta(0)
    sizes, dtype = tuple(info.sizes()), _dtype_name(info)
    spec = manifest.inputs[0]
    problems = [] if (sizes, dtype) == (tuple(spec.shape), spec.dtype) else [
        f"the program takes {sizes} {dtype}; the manifest says {spec.shape} {spec.dtype}"]
    return problems, {"input": list(sizes), "delegates": (manifest.details.get("delegation") or {}).get("backends")}


def load(path, manifest=None, threads: int | None = None):
    """A runner through ``executorch.runtime`` (XNNPACK programs; the Core ML backend runs only on Apple).

    ``threads`` sizes the process's XNNPACK threadpool, which ignores ``torch.set_num_threads`` (unset: its
    default, one thread per core)."""
    import torch

    with quiet():
        from executorch.runtime import Runtime

        if threads:
            from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

            _unsafe_reset_threadpool(threads)

        program = Runtime.get().load_program(Path(path))
        method = program.load_method("forward")
    meta = method.metadata.input_tensor_meta(0)

    def run(x: np.ndarray) -> np.ndarray:
        return method.execute([torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))])[0].numpy()

    from importlib.metadata import version

    return Runner(run, f"executorch.runtime {version('executorch')}", "image", tuple(meta.sizes()),
                  _dtype_name(meta))


def _dtype_name(tensor_meta) -> str:
    """The numpy name of an ExecuTorch tensor's scalar type."""
    return _SCALAR_TYPES.get(tensor_meta.dtype(), str(tensor_meta.dtype()))


def write_bundled_program(path, cases, out: Path) -> None:
    """A BundledProgram (``.bpte``, ``executorch.devtools.bundled_program``) of the program at ``path`` with one
    test case of ``forward`` per (input, expected output) pair of ``cases``: what ExecuTorch's own
    bundled-program runner (devtools ``example_runner --bundled_program_path``) and Python's
    ``verify_result_with_bundled_expected_output`` check."""
    import torch
    from executorch.devtools import BundledProgram
    from executorch.devtools.bundled_program.config import MethodTestCase, MethodTestSuite
    from executorch.devtools.bundled_program.serialize import serialize_from_bundled_program_to_flatbuffer

    suite = MethodTestSuite(method_name="forward", test_cases=[
        MethodTestCase(inputs=[torch.from_numpy(np.ascontiguousarray(x))],
                       expected_outputs=[torch.from_numpy(np.ascontiguousarray(y))]) for x, y in cases])
    with quiet():
        program = BundledProgram(None, [suite], pte_file_path=str(path))
        Path(out).write_bytes(serialize_from_bundled_program_to_flatbuffer(program))


#: ExecuTorch ScalarType codes (runtime/core/portable_type/scalar_type.h) by numpy name
_SCALAR_TYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32",
                 7: "float64", 11: "bool"}


@dataclass(frozen=True)
class ExecuTorchOptions:
    delegate: str | None = option(None, flag="--delegate", choices=("xnnpack", "coreml"),
                                  help="ExecuTorch delegate (default xnnpack; coreml lowers to ExecuTorch's Core "
                                       "ML backend).")


@register
class ExecuTorchBackend(Backend):
    """ExecuTorch ``.pte`` programs lowered to XNNPACK (or ExecuTorch's Core ML backend), run with
    ``executorch.runtime``; quantized with PT2E and the XNNPACK quantizer."""

    name = NAME
    title = "ExecuTorch"
    suffix = SUFFIX
    extra = "executorch"
    libraries = ("executorch",)
    runtime_modules = RUNTIME_MODULES
    requires = ("executorch",)
    default_profile = "android-arm64-executorch"
    quantization_modes = (QuantMode("int8", "int8", calibrated=True), QuantMode("int8-dynamic", "int8"))
    #: the activation observer of PT2E (XNNPACK's config uses torchao's HistogramObserver; MinMaxObserver)
    calibration_methods = ("histogram", "minmax")
    dfq_default = "none"
    augments_calibration = True
    rank = 1
    export_cost = 4
    colour = "#1f77b4"
    Options = ExecuTorchOptions
    has_structural_check = True
    bundled_program_suffix = ".bpte"

    def check(self, profile, common, options) -> None:
        if options.delegate and profile.export.delegates and options.delegate not in profile.export.delegates:
            from ..errors import UsageError

            raise UsageError(f"target {profile.name} does not offer the {options.delegate} delegate")

    def artifact_tags(self, profile, common, options, precision: str) -> tuple[str, ...]:
        delegate = options.delegate or profile.export.delegate
        return () if delegate == "xnnpack" else (delegate,)

    def export(self, job, out) -> BackendResult:
        return export(job, out)

    def load(self, path, manifest=None, threads=None, setting=None) -> Runner:
        return load(path, manifest, threads)

    def cannot_run_here(self, path, manifest) -> str | None:
        return cannot_run_here(path, manifest)

    def structural_problems(self, path, manifest) -> tuple[list[str], dict]:
        return structural_problems(path, manifest)

    def write_bundled_program(self, path, cases, out) -> None:
        write_bundled_program(path, cases, out)
