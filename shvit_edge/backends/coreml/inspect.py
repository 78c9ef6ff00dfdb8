"""Reading a saved ``.mlpackage`` without the Core ML runtime (it works on Linux): its spec (:func:`describe`), its
ML program's weights and how they are compressed, the preprocessing its image input does; and verify's structural
checks built on them (:func:`structural_problems`, :func:`weights_for_reference`, :func:`reference_problems`)."""

from __future__ import annotations

import contextlib
import functools
from collections import Counter
from pathlib import Path

from .._quiet import quiet


#: weights with at most this many elements stay float (coremltools' default ``weight_threshold``)
WEIGHT_THRESHOLD = 2048
#: the compressed-weight op types and bit width each mode must leave in the package
EXPECTED_COMPRESSION: dict[str, tuple[tuple[str, ...], int]] = {
    "int8-weights": (("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale"), 8),
    "palettize-6": (("constexpr_lut_to_dense",), 6),
    "palettize-4": (("constexpr_lut_to_dense",), 4),
    "w8a8": (("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale"), 8),
}


def weight_key(name: str) -> str:
    """A weight's name in the Core ML program without the suffixes conversion and compression add:
    ``p_inner_head_weight_to_fp16_palettized`` -> ``p_inner_head_weight``."""
    for suffix in ("_palettized", "_quantized", "_to_fp16"):
        name = name.removesuffix(suffix)
    return name


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
    left = [name for name in found["float_weights_above_threshold"] if weight_key(name) not in kept]
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
    return problems, facts


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
