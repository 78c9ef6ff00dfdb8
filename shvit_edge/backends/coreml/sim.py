"""``coreml-sim``: an ML-program interpreter in NumPy, so a Core ML package computes on any machine.

coremltools reads a saved ``.mlpackage`` anywhere (``MLModel(path, skip_model_load=True)``, its spec, and the
MIL program with its ``weight.bin`` blobs through ``milproto.load``); only its prediction needs Apple's Core ML
framework. :class:`Program` executes the program's ``main`` function op by op, with an environment keyed by
variable name, through the NumPy kernels of :mod:`.kernels`. Compressed weights (``constexpr_*`` ops: affine
dequantization, LUT palettization, sparsity, the iOS 18 blockwise family) are decompressed once at load, through
the op's own ``materialized_val_inference``. An op type the interpreter has no kernel for, or an op from an
opset newer than it knows, is refused with a message naming it (:class:`UnsupportedProgram`).

**Arithmetic.** Each op computes in float32 and rounds its outputs to the dtype the program declares: float16
round-to-nearest-even, a value beyond 65504 becomes inf (as the cast does on a device). That is the GPU's
default (fp16 storage, fp32 arithmetic) and what is reported of the Neural Engine's wide accumulators; where a
device fuses ops (conv + bias + activation) it rounds once where this rounds per op, so this is slightly
pessimistic there. Two options model other devices (:class:`SimOptions`): ``flush_subnormals`` flushes float16
subnormals (below 2**-14) to zero, as the Neural Engine is reported to; ``fp16_accumulation`` accumulates
conv, linear, matmul and sum/mean reductions in float16 (a GPU with ``allowLowPrecisionAccumulationOnGPU``),
approximated as float32 partial sums of :data:`~.kernels.FP16_ACCUMULATION_CHUNK` products added in float16.
None of this has been compared with a device yet (README, "Core ML on Linux").

**fp16 headroom.** :class:`Headroom` records, per op with a float output, the largest finite magnitude seen over
every run, its margin to 65504, the values that overflowed to inf, NaNs, and the values flushed to zero: where
an fp16 program would overflow on a phone before it does.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import InputError
from .kernels import KERNELS, Context, Unsupported

RUNTIME = "coreml-sim"
FP16_MAX = 65504.0
#: the smallest normal float16; below it a value is subnormal (flushed to zero where subnormals are)
FP16_MIN_NORMAL = 2.0 ** -14
#: opsets (coremltools' op definition modules) whose semantics the kernels follow
KNOWN_OPSETS = ("iOS15", "iOS16", "iOS17", "iOS18")
#: Core ML specification versions of ML programs from iOS 15 (5) to iOS 18 (9)
KNOWN_SPEC_VERSIONS = range(5, 10)


class UnsupportedProgram(InputError):
    """A program with an op or opset the interpreter does not know (exit 2 from the command line, one failed
    run in verify)."""


@dataclass(frozen=True)
class SimOptions:
    #: flush float16 subnormals to zero (the Neural Engine is reported to)
    flush_subnormals: bool = False
    #: accumulate conv/linear/matmul and sums in float16 (a GPU allowing low-precision accumulation)
    fp16_accumulation: bool = False


@dataclass
class OpStats:
    """What one op's float output held over every run."""

    name: str
    op_type: str
    dtype: str
    max_abs: float = 0.0
    values: int = 0
    overflow: int = 0
    nan: int = 0
    flushed: int = 0

    @property
    def margin(self) -> float:
        """How many times the largest magnitude fits under 65504 (inf for an all-zero output)."""
        return FP16_MAX / self.max_abs if self.max_abs > 0 else math.inf

    def as_json(self) -> dict:
        return {"op": self.name, "type": self.op_type, "dtype": self.dtype, "max_abs": self.max_abs,
                "margin": None if math.isinf(self.margin) else self.margin, "overflow": self.overflow,
                "nan": self.nan, "flushed_fraction": self.flushed / self.values if self.values else 0.0}


@dataclass
class Headroom:
    """Per-op float16 headroom over the runs it is passed to (:meth:`Program.run`)."""

    ops: dict[str, OpStats] = field(default_factory=dict)
    #: the first op (in program order) whose output had a NaN or inf while its inputs had none
    first_nonfinite: str | None = None

    def record(self, op_name: str, op_type: str, dtype: str, exact: np.ndarray, rounded: np.ndarray,
               inputs_finite: bool) -> None:
        stats = self.ops.get(op_name)
        if stats is None:
            stats = self.ops[op_name] = OpStats(op_name, op_type, dtype)
        finite = np.isfinite(rounded)
        all_finite = bool(finite.all())
        magnitude = np.abs(rounded if all_finite else np.where(finite, rounded, 0))
        stats.max_abs = max(stats.max_abs, float(magnitude.max()) if magnitude.size else 0.0)
        stats.values += int(rounded.size)
        if not all_finite:
            stats.nan += int(np.isnan(rounded).sum())
            stats.overflow += int((np.isinf(rounded) & np.isfinite(exact)).sum())
            if inputs_finite and self.first_nonfinite is None:
                self.first_nonfinite = op_name
        if dtype == "fp16":
            stats.flushed += int(((rounded == 0) & (exact != 0)).sum())

    def fp16_ops(self) -> list[OpStats]:
        return [s for s in self.ops.values() if s.dtype == "fp16"]

    def least(self) -> OpStats | None:
        """The fp16 op with the least headroom (the largest magnitude)."""
        ops = self.fp16_ops()
        return max(ops, key=lambda s: s.max_abs) if ops else None

    def overflowing(self) -> list[OpStats]:
        return [s for s in self.fp16_ops() if s.overflow]

    def as_json(self) -> dict:
        least = self.least()
        return {"limit": FP16_MAX, "least": None if least is None else least.as_json(),
                "overflowing": [s.name for s in self.overflowing()], "first_nonfinite": self.first_nonfinite,
                "ops": [s.as_json() for s in sorted(self.ops.values(), key=lambda s: -s.max_abs)]}


_NP_DTYPES = {"fp16": np.float16, "fp32": np.float32, "fp64": np.float64, "int8": np.int8, "uint8": np.uint8,
              "int16": np.int16, "uint16": np.uint16, "int32": np.int32, "int64": np.int64, "uint32": np.uint32,
              "bool": np.bool_}


def _dtype_name(var) -> str:
    """A MIL variable's element type by its short name (fp16, fp32, int32, bool, str, dict, ...)."""
    from coremltools.converters.mil.mil import types

    try:
        dtype = var.dtype
    except ValueError:  # a list (a classifier's classes)
        return "list"
    return types.builtin_to_string(dtype) if dtype is not None else "unknown"


def _round(value, dtype: str, options: SimOptions):
    """``value`` as the declared ``dtype`` holds it; float16 values are kept as float32 arrays that hold
    float16-representable numbers (kernels compute in float32)."""
    if dtype == "fp16":
        with np.errstate(over="ignore"):
            out = np.asarray(value, dtype=np.float32).astype(np.float16).astype(np.float32)
        if options.flush_subnormals:
            out[np.abs(out) < FP16_MIN_NORMAL] = 0.0
        return out
    if dtype == "fp32":
        return np.asarray(value, dtype=np.float32)
    if dtype in _NP_DTYPES:
        return np.asarray(value).astype(_NP_DTYPES[dtype])
    return value


def _opset(op) -> str | None:
    found = re.search(r"\.defs\.(iOS\d+)\.", type(op).__module__)
    return found.group(1) if found else None


@dataclass
class _Step:
    """One op, bound: its kernel, its inputs (variable names, or values for constants), its outputs."""

    name: str
    op_type: str
    kernel: object
    inputs: dict
    outputs: list[tuple[str, str]]


def _input_value(var, consts: dict):
    """A constant input's value, or None for a variable the run computes."""
    if isinstance(var, (list, tuple)):
        return None
    if var.name in consts:
        return consts[var.name]
    return None


@dataclass
class InputSpec:
    name: str
    shape: tuple
    dtype: str
    #: for an image input: "RGB", "BGR" or "GRAYSCALE"; None for a tensor
    color_space: str | None = None


class Program:
    """A loaded ML program, ready to run. :meth:`load` reads an ``.mlpackage``; :meth:`from_mil` takes a
    coremltools ``Program`` (e.g. built with the MIL builder)."""

    def __init__(self, prog, inputs: list[InputSpec], outputs: list[str], spec_version: int | None = None):
        function = prog.functions.get("main")
        if function is None:
            raise UnsupportedProgram("the ML program has no 'main' function")
        self.inputs = inputs
        self.outputs = outputs
        self.spec_version = spec_version
        self._consts: dict[str, object] = {}
        self._steps: list[_Step] = []
        self._bind(function)

    @classmethod
    def from_mil(cls, prog, color_spaces: dict[str, str] | None = None) -> Program:
        function = prog.functions["main"]
        inputs = [InputSpec(name, tuple(var.shape), _dtype_name(var), (color_spaces or {}).get(name))
                  for name, var in function.inputs.items()]
        return cls(prog, inputs, [v.name for v in function.outputs])

    @classmethod
    def load(cls, path) -> Program:
        """Read a saved ``.mlpackage`` (its spec and weights), on any platform."""
        import coremltools as ct
        from coremltools.converters.mil.frontend.milproto.load import load as load_milproto

        path = Path(path)
        try:
            model = ct.models.MLModel(str(path), skip_model_load=True)
        except Exception as exc:  # noqa: BLE001 - coremltools raises many kinds for an unreadable package
            raise InputError(f"{path}: not a readable Core ML package ({exc})") from None
        spec = model.get_spec()
        if spec.WhichOneof("Type") != "mlProgram":
            raise UnsupportedProgram(f"{path}: a {spec.WhichOneof('Type')} model, not an ML program: the "
                                     f"coreml-sim interpreter runs ML programs only")
        if spec.specificationVersion not in KNOWN_SPEC_VERSIONS:
            raise UnsupportedProgram(f"{path}: Core ML specification version {spec.specificationVersion}, which "
                                     f"the coreml-sim interpreter does not know (it runs versions "
                                     f"{KNOWN_SPEC_VERSIONS.start}-{KNOWN_SPEC_VERSIONS.stop - 1}, iOS 15-18)")
        try:
            prog = load_milproto(spec, spec.specificationVersion, file_weights_dir=model.weights_dir)
        except (NotImplementedError, KeyError, ValueError, TypeError) as exc:
            raise UnsupportedProgram(f"{path}: coremltools cannot read this program ({exc})") from None
        color = {}
        for feature in spec.description.input:
            if feature.type.WhichOneof("Type") == "imageType":
                from coremltools.proto import FeatureTypes_pb2

                color[feature.name] = FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(
                    feature.type.imageType.colorSpace)
        function = prog.functions["main"]
        inputs = [InputSpec(name, tuple(var.shape), _dtype_name(var), color.get(name))
                  for name, var in function.inputs.items()]
        outputs = [feature.name for feature in spec.description.output]
        return cls(prog, inputs, outputs, spec.specificationVersion)

    def _bind(self, function) -> None:
        for op in function.operations:
            opset = _opset(op)
            if opset is not None and opset not in KNOWN_OPSETS:
                raise UnsupportedProgram(f"op {op.name!r} is {op.op_type} of opset {opset}, which the coreml-sim "
                                         f"interpreter does not know (it knows {', '.join(KNOWN_OPSETS)})")
            if op.op_type == "const":
                self._consts[op.outputs[0].name] = _round(op.outputs[0].val, _dtype_name(op.outputs[0]),
                                                          SimOptions())
                continue
            if op.op_type.startswith("constexpr_"):
                values = op.materialized_val_inference()
                values = values if isinstance(values, tuple) else (values,)
                for var, value in zip(op.outputs, values, strict=True):
                    self._consts[var.name] = _round(value, _dtype_name(var), SimOptions())
                continue
            if op.op_type not in KERNELS:
                raise UnsupportedProgram(f"op {op.name!r} is {op.op_type}, which the coreml-sim interpreter has "
                                         f"no kernel for")
            inputs: dict = {}
            defaults = dict(op.default_inputs().items())
            for key, var in op.inputs.items():
                if isinstance(var, (list, tuple)):
                    inputs[key] = [("var", v.name) if v.name not in self._consts else ("const", self._consts[v.name])
                                   for v in var]
                elif var.name in self._consts:
                    inputs[key] = ("const", self._consts[var.name])
                elif var.val is not None and var.op is None:
                    inputs[key] = ("const", var.val)
                else:
                    inputs[key] = ("var", var.name)
            for key, value in defaults.items():
                if key not in inputs and value is not None:
                    inputs[key] = ("const", value.val if hasattr(value, "val") else value)
            self._steps.append(_Step(op.name, op.op_type, KERNELS[op.op_type], inputs,
                                     [(v.name, _dtype_name(v)) for v in op.outputs]))

    @property
    def op_types(self) -> set[str]:
        return {step.op_type for step in self._steps}

    def run(self, feeds: dict[str, np.ndarray], options: SimOptions | None = None,
            headroom: Headroom | None = None) -> dict[str, object]:
        """The program's outputs for ``feeds`` (by input name, in the program's own layout and channel order).
        A float16 output comes back as float32 holding float16 values; a classifier's dictionary output as the
        probability vector in the order of its classes."""
        options = options or SimOptions()
        env: dict[str, object] = {}
        for spec in self.inputs:
            if spec.name not in feeds:
                raise InputError(f"the program's input {spec.name!r} was not given")
            value = np.asarray(feeds[spec.name])
            if spec.shape and tuple(value.shape) != tuple(int(d) if isinstance(d, (int, np.integer)) else
                                                          value.shape[i] for i, d in enumerate(spec.shape)):
                raise InputError(f"the program's input {spec.name!r} is {spec.shape}; got {value.shape}")
            env[spec.name] = _round(value, spec.dtype, options)
        fp16_ctx, plain_ctx = Context(fp16_accumulation=True), Context()
        for step in self._steps:
            args = {key: self._value(ref, env) for key, ref in step.inputs.items()}
            ctx = fp16_ctx if options.fp16_accumulation and step.outputs[0][1] == "fp16" else plain_ctx
            try:
                results = step.kernel(ctx, **args)
            except Unsupported as exc:
                raise UnsupportedProgram(f"op {step.name!r} ({step.op_type}): {exc}, which the coreml-sim "
                                         f"interpreter does not implement") from None
            except (ValueError, TypeError, IndexError) as exc:
                raise InputError(f"op {step.name!r} ({step.op_type}) failed: {exc}") from None
            inputs_finite = headroom is None or all(
                _finite(v) for v in args.values())
            for (name, dtype), value in zip(step.outputs, results, strict=True):
                rounded = _round(value, dtype, options)
                env[name] = rounded
                if headroom is not None and dtype in ("fp16", "fp32") and isinstance(rounded, np.ndarray):
                    exact = np.asarray(value, dtype=np.float32)
                    headroom.record(step.name, step.op_type, dtype, exact, rounded, inputs_finite)
        missing = [name for name in self.outputs if name not in env]
        if missing:
            raise UnsupportedProgram(f"the program's output {missing[0]!r} is not computed by its ops")
        return {name: env[name] for name in self.outputs}

    @staticmethod
    def _value(ref, env):
        if isinstance(ref, list):
            return [Program._value(r, env) for r in ref]
        kind, value = ref
        return value if kind == "const" else env[value]


def _finite(value) -> bool:
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return bool(np.isfinite(value).all())
    return True


def to_color_space(pixels: np.ndarray, color_space: str | None) -> np.ndarray:
    """RGB pixels (N, 3, H, W), 0-255, as an image input of ``color_space`` takes them (float32)."""
    pixels = np.asarray(pixels, dtype=np.float32)
    if color_space == "BGR":
        return pixels[:, ::-1]
    if color_space in ("GRAYSCALE", "GRAYSCALE_FLOAT16"):
        if pixels.shape[1] == 1:
            return pixels
        weights = np.asarray([0.299, 0.587, 0.114], np.float32).reshape(1, 3, 1, 1)  # ITU-R BT.601 luma
        return (pixels * weights).sum(axis=1, keepdims=True)
    return pixels
