"""Core ML: an ML program ``.mlpackage`` for Xcode (iOS 16 by default), converted with coremltools.

Default I/O is what an app wants: input ``image``, an RGB ``ImageType`` (a ``CVPixelBuffer`` or ``CGImage``)
whose scale 1/255 and bias -mean are applied by Core ML, with 1/std folded into the first conv; output a
classifier (``classLabel`` and ``classLabel_probs``, softmax probabilities) with class labels. ``--coreml-io
tensor`` gives a normalized float32 tensor ``image`` in and ``logits`` out. Core ML cannot predict on Linux;
the package's spec can be read anywhere (:func:`describe`).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from ..errors import UsageError
from ..manifest import TensorSpec
from ._quiet import quiet
from .base import BackendResult, modules_available

NAME = "coreml"
SUFFIX = ".mlpackage"


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
    if image_io:
        model = _softmax_head(source.deploy_model(fold_std=True))
        with torch.no_grad():
            program = torch.export.export(model, (example,))
        inputs = [ct.ImageType(name="image", shape=(1, 3, h, w), color_layout=ct.colorlayout.RGB,
                               scale=1 / 255.0, bias=[-m for m in source.mean], channel_first=True)]
        extra = {"classifier_config": ct.ClassifierConfig(list(source.labels))}
    else:
        program = source.exported_program(example)
        inputs = [ct.TensorType(name="image", shape=(batch, 3, h, w), dtype=np.float32)]
        extra = {"outputs": [ct.TensorType(name="logits", dtype=np.float32)]}
    mlmodel = ct.convert(program.run_decompositions({}), inputs=inputs, convert_to="mlprogram",
                         minimum_deployment_target=_deployment_target(target_name), compute_precision=precision,
                         **extra)
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
    return BackendResult(
        inputs=(input_spec,), outputs=outputs, preprocessing_applied=preprocessing["applied"],
        details={"minimum_deployment_target": target_name, "compute_precision": job.precision,
                 "compute_units": list(job.profile.export.compute_units), "ops": info["ops"],
                 "weight_dtypes": info["weight_dtypes"], "specification_version": info["specification_version"]},
    )


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
