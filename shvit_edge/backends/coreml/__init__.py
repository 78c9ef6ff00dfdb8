"""Core ML: an ML program ``.mlpackage`` for Xcode (iOS 16 by default), converted with coremltools.

Default I/O is what an app wants: input ``image``, an RGB ``ImageType`` (a ``CVPixelBuffer`` or ``CGImage``)
whose scale 1/255 and bias -mean are applied by Core ML, with 1/std folded into the first conv; output a
classifier (``classLabel`` and ``classLabel_probs``, softmax probabilities) with class labels. ``--coreml-io
tensor`` gives a normalized float32 tensor ``image`` in and ``logits`` out. Core ML predicts only on Apple
platforms; the package's spec can be read anywhere (:func:`describe`), and its ML program executed anywhere by
the ``coreml-sim`` interpreter (:mod:`.sim`), which verify runs off macOS.

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
coremltools recommends. verify's structural check (:func:`structural_problems`) checks that the compressed
weights are in the package, with the mode's bit width; then verify runs the compressed program itself (Core ML
on macOS, the ``coreml-sim`` interpreter elsewhere) and judges it by the mode's tolerance class.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import UsageError
from .._quiet import quiet
from ..base import Backend, BackendResult, QuantMode, Runner, modules_available, option, register
from .compress import W8A8_SETTINGS, WEIGHT_ONLY, compress_weights, lifted, model_inputs, quantize_w8a8
from .convert import deployment_target, export, softmax_head
from .inspect import (EXPECTED_COMPRESSION, FOLDED_WEIGHT_TOLERANCE, WEIGHT_THRESHOLD, compression, describe,
                      image_preprocessing, package_weights, reference_problems, structural_problems, weight_key,
                      weights_for_reference)
from .runtime import COMPUTE_UNITS, SIM_SETTINGS, can_run, cannot_run_here, load, settings_here

__all__ = [
    "NAME", "SUFFIX", "RUNTIME_MODULES", "export", "load", "cannot_run_here", "can_run",
    "structural_problems", "weights_for_reference", "reference_problems", "describe", "compression",
    "image_preprocessing", "package_weights", "model_inputs", "softmax_head",
    "compress_weights", "deployment_target", "quantize_w8a8", "lifted", "weight_key",
    "quiet",
    "WEIGHT_ONLY", "WEIGHT_THRESHOLD", "EXPECTED_COMPRESSION", "W8A8_SETTINGS", "COMPUTE_UNITS",
    "FOLDED_WEIGHT_TOLERANCE", "CoreMLBackend", "CoreMLOptions", "SIM_SETTINGS",
]

NAME = "coreml"
SUFFIX = ".mlpackage"
#: what ``load`` imports: a host benchmark imports it before timing the load
RUNTIME_MODULES = ("coremltools",)



@dataclass(frozen=True)
class CoreMLOptions:
    coreml_io: str = option("image", flag="--coreml-io", choices=("image", "tensor"),
                            help="Core ML: RGB image in and classifier out, or a normalized float tensor in and "
                                 "logits out.")


@register
class CoreMLBackend(Backend):
    """Core ML ML-program packages through coremltools; compressed with coremltools.optimize. Core ML runs only
    on Apple platforms; verify checks the package's structure and its first conv against the reference, then
    runs it there, or elsewhere in the ``coreml-sim`` interpreter."""

    name = NAME
    title = "Core ML"
    suffix = SUFFIX
    extra = "coreml"
    libraries = ("coremltools",)
    runtime_modules = RUNTIME_MODULES
    #: coremltools' __init__ imports every converter frontend it finds (torch, ExecuTorch's exir, torchao,
    #: scikit-learn ...): 13 s of a 14 s import here; loading and running a package needs none of them (1.4 s)
    runtime_unneeded = ("torch", "torchao", "executorch", "sklearn", "transformers", "tensorflow", "xgboost",
                        "libsvm")
    requires = ("coremltools",)
    default_profile = "iphone12-ios16"
    quantization_modes = (QuantMode("int8-weights", "int8"), QuantMode("palettize-6", "int8"),
                          QuantMode("palettize-4", "palettize-4"),
                          QuantMode("w8a8", "int8", calibrated=True, min_deployment_target="iOS17",
                                    needs_why="activation quantization"))
    rank = 0
    export_cost = 2
    colour = "#d62728"
    Options = CoreMLOptions
    has_structural_check = True
    has_reference_check = True
    interpreters = SIM_SETTINGS

    def check(self, profile, common, options) -> None:
        if options.coreml_io == "image" and common.batch != 1:
            raise UsageError("a Core ML image input takes one image (batch 1); for batch > 1 use --coreml-io tensor")
        if self.is_available():  # the profile's deployment target, before anything converts
            with quiet():
                deployment_target(profile.export.minimum_deployment_target or "iOS16")
        if common.quantize == "w8a8" and not modules_available("executorch", "torchao"):
            raise UsageError("--quantize w8a8 calibrates int8 activations in PyTorch with the Core ML quantizer "
                             "that ExecuTorch ships (coremltools' own calibration runs the model, which only macOS "
                             "can): pip install 'shvit-edge[executorch]'")

    def artifact_tags(self, profile, common, options, precision: str) -> tuple[str, ...]:
        return (precision, "tensor") if options.coreml_io == "tensor" else (precision,)

    def export(self, job, out) -> BackendResult:
        return export(job, out)

    def load(self, path, manifest=None, threads=None, setting=None) -> Runner:
        return load(path, manifest, threads, compute_units=setting or "cpu_only")

    def runtime_settings(self, profile) -> tuple[str | None, ...]:
        """On macOS each compute-unit setting of the profile (``cpu_only`` if it names none); elsewhere the
        ``coreml-sim`` interpreter."""
        return settings_here(profile)

    def cannot_run_here(self, path, manifest) -> str | None:
        return cannot_run_here(path, manifest)

    def structural_problems(self, path, manifest) -> tuple[list[str], dict]:
        return structural_problems(path, manifest)

    def weights_for_reference(self, path, manifest) -> dict:
        return weights_for_reference(path, manifest)

    def reference_problems(self, arrays: dict, source, manifest) -> list[str]:
        return reference_problems(arrays, source, manifest)
