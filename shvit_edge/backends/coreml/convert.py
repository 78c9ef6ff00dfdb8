"""Core ML conversion: the torch model (with a softmax head for the image classifier) captured by
``torch.export`` and converted with coremltools to an ML program for the profile's deployment target, its
``--quantize`` mode applied (:mod:`.compress`), with descriptions and metadata, saved as an ``.mlpackage``."""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import UsageError
from ...manifest import TensorSpec
from .._quiet import quiet
from ..base import BackendResult
from .compress import W8A8_SETTINGS, WEIGHT_ONLY, compress_weights, lifted, quantize_w8a8
from .inspect import EXPECTED_COMPRESSION, compression, describe


def softmax_head(model):
    import torch

    class WithSoftmax(torch.nn.Module):
        """Core ML's classifier maps its input to labels as is; apps expect probabilities."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return torch.softmax(self.inner(x), dim=-1)

    return WithSoftmax(model).eval()


def deployment_target(name: str):
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

    from ... import __version__

    options, source = job.options, job.source
    h, w = job.resolution
    batch = options.batch
    image_io = job.backend_options.coreml_io == "image"
    if image_io and batch != 1:
        raise UsageError("a Core ML image input takes one image (batch 1); for batch > 1 use --coreml-io tensor")
    target_name = job.profile.export.minimum_deployment_target or "iOS16"
    precision = ct.precision.FLOAT16 if job.precision == "fp16" else ct.precision.FLOAT32
    example = job.example_input()
    mode = options.quantize
    if mode is not None and mode not in EXPECTED_COMPRESSION:
        raise UsageError(f"--quantize {mode} is not a Core ML mode (Core ML: {', '.join(EXPECTED_COMPRESSION)})")
    if image_io:
        model = softmax_head(source.deploy_model(fold_std=True))
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
    calibration = None
    if mode == "w8a8":  # activation ranges come from running the torch model: see the module docstring
        program, calibration = quantize_w8a8(job, model, program, example, image_io)
    mlmodel = ct.convert(program.run_decompositions({}), inputs=inputs, convert_to="mlprogram",
                         minimum_deployment_target=deployment_target(target_name), compute_precision=precision,
                         **extra)
    settings = None
    if mode in WEIGHT_ONLY:
        mlmodel, settings = compress_weights(job, mlmodel, model, mode, image_io)
    preprocessing = {"color": "RGB", "scale": 1 / 255, "mean": list(source.mean), "std": list(source.std),
                     "applied": "in-model" if image_io else "none"}
    mlmodel.short_description = (
        f"{source.family.title} {source.variant} image classifier, {h}x{w}, {source.num_classes} classes"
        f"{' (UNTRAINED weights: for pipeline and latency checks only)' if source.untrained else ''}. "
        + (f"{source.family.description}, exported by shvit-edge." if source.family.description
           else "Exported by shvit-edge."))
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
            settings = W8A8_SETTINGS
        if options.keep_float:  # their weights, by name in the program (see weight_key)
            prefix = "inner." if image_io else ""
            settings = {**settings, "keep_float_weights": [lifted(f"{prefix}{layer}.weight")
                                                           for layer in options.keep_float]}
        details["compression"] = {**settings, **compression(out)}
        quantization = job.quantization(calibration)
    return BackendResult(inputs=(input_spec,), outputs=outputs, preprocessing_applied=preprocessing["applied"],
                         details=details, quantization=quantization)
