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

from .._quiet import quiet
from ..base import modules_available
from .compress import (ESTIMATE_SAMPLES, W8A8_SETTINGS, WEIGHT_ONLY, compress_weights, estimate_inputs, judged, lifted,
                       model_inputs, quantize_w8a8, weight_compression_estimate)
from .convert import export, softmax_head
from .inspect import (EXPECTED_COMPRESSION, FOLDED_WEIGHT_TOLERANCE, WEIGHT_THRESHOLD, compression, describe,
                      image_preprocessing, package_weights, reference_problems, structural_problems, weight_key,
                      weights_for_reference)
from .runtime import COMPUTE_UNITS, can_run, cannot_run_here, load

__all__ = [
    "NAME", "SUFFIX", "RUNTIME_MODULES", "is_available", "export", "load", "cannot_run_here", "can_run",
    "structural_problems", "weights_for_reference", "reference_problems", "describe", "compression",
    "image_preprocessing", "package_weights", "weight_compression_estimate", "model_inputs", "softmax_head",
    "compress_weights", "quantize_w8a8", "estimate_inputs", "judged", "lifted", "weight_key", "quiet",
    "WEIGHT_ONLY", "WEIGHT_THRESHOLD", "EXPECTED_COMPRESSION", "ESTIMATE_SAMPLES", "W8A8_SETTINGS", "COMPUTE_UNITS",
    "FOLDED_WEIGHT_TOLERANCE",
]

NAME = "coreml"
SUFFIX = ".mlpackage"
#: what ``load`` imports: a host benchmark imports it before timing the load
RUNTIME_MODULES = ("coremltools",)


def is_available() -> bool:
    return modules_available("coremltools")
