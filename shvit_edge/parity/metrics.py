"""Parity metrics of an output against its reference, as one structured value."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

#: values closer together than this fraction of the array's largest magnitude count as equal (float32 has 24
#: bits; a runtime's rounding moves a value by far less, an input that matters moves it by far more)
CONSTANT_RTOL = 1e-6


@dataclass(frozen=True)
class ParityMetrics:
    max_abs: float
    mean_abs: float
    #: cosine similarity of the flattened outputs (float64)
    cosine: float
    #: signal-to-quantization-noise ratio in dB: 10 log10(|ref|^2 / |out - ref|^2); inf when identical
    sqnr_db: float
    #: fraction of samples whose arg-max agrees (a tie counts: see :func:`top1_agreement`)
    top1_agreement: float
    #: mean over samples of |top5(out) ∩ top5(ref)| / 5
    top5_overlap: float
    finite: bool
    samples: int
    #: how the output does not react to its input (:func:`constancy`); empty when it does (a string either way:
    #: readers that turn every None of a metrics record into infinity keep working)
    output_constant: str = ""
    #: the same of the reference: an output that ignores its input matches a reference that ignores it too
    reference_constant: str = ""

    def as_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def constancy(values) -> str | None:
    """How ``values`` (samples first) fail to depend on the input, or None: ``"all values equal"``, or ``"the same
    output for every input"`` (with at least 2 samples). Equal within :data:`CONSTANT_RTOL` of the largest
    magnitude; an array holding NaN or Inf is not judged here (None)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0 or not np.isfinite(x).all():
        return None
    x = x.reshape(x.shape[0], -1)
    tolerance = CONSTANT_RTOL * float(np.abs(x).max())
    if float(np.ptp(x)) <= tolerance:
        return "all values equal"
    if x.shape[0] >= 2 and float(np.ptp(x, axis=0).max()) <= tolerance:
        return f"the same output for all {x.shape[0]} inputs"
    return None


def top1_agreement(out: np.ndarray, ref: np.ndarray) -> float:
    """The fraction of samples (rows) whose top class agrees: the reference's top class is one of the output's
    largest values, or the other way round. A tie is not a disagreement: an fp16 output of a near-uniform
    classifier (an untrained one) rounds many probabilities to one value, and which of them arg-max picks
    says nothing about the artifact."""
    rows = np.arange(out.shape[0])
    agree = (out[rows, ref.argmax(1)] >= out.max(1)) | (ref[rows, out.argmax(1)] >= ref.max(1))
    return float(np.mean(agree))


def compare(output, reference) -> ParityMetrics:
    """Metrics of ``output`` against ``reference``, both (samples, classes) or any shape with samples first."""
    out = np.asarray(output, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if out.shape != ref.shape:
        raise ValueError(f"output shape {out.shape} differs from the reference's {ref.shape}")
    finite = bool(np.isfinite(out).all())
    out2, ref2 = out.reshape(out.shape[0], -1), ref.reshape(ref.shape[0], -1)
    if not finite:
        nan = float("nan")
        return ParityMetrics(nan, nan, nan, nan, 0.0, 0.0, False, out.shape[0],
                             reference_constant=constancy(ref2) or "")
    diff = out2 - ref2
    denom = np.linalg.norm(out2) * np.linalg.norm(ref2)
    cosine = float(np.dot(out2.ravel(), ref2.ravel()) / denom) if denom > 0 else float(np.array_equal(out2, ref2))
    noise = float(np.sum(diff ** 2))
    sqnr = float("inf") if noise == 0 else 10 * math.log10(float(np.sum(ref2 ** 2)) / noise)
    top1 = top1_agreement(out2, ref2)
    k = min(5, out2.shape[1])
    top_out = np.argsort(-out2, axis=1)[:, :k]
    top_ref = np.argsort(-ref2, axis=1)[:, :k]
    overlap = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(top_out, top_ref, strict=True)]))
    return ParityMetrics(float(np.abs(diff).max()), float(np.abs(diff).mean()), cosine, sqnr, top1, overlap,
                         True, out.shape[0], output_constant=constancy(out2) or "",
                         reference_constant=constancy(ref2) or "")
