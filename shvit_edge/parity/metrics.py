"""Parity metrics of an output against its reference, as one structured value."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class ParityMetrics:
    max_abs: float
    mean_abs: float
    #: cosine similarity of the flattened outputs (float64)
    cosine: float
    #: signal-to-quantization-noise ratio in dB: 10 log10(|ref|^2 / |out - ref|^2); inf when identical
    sqnr_db: float
    #: fraction of samples whose arg-max agrees
    top1_agreement: float
    #: mean over samples of |top5(out) ∩ top5(ref)| / 5
    top5_overlap: float
    finite: bool
    samples: int

    def as_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


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
        return ParityMetrics(nan, nan, nan, nan, 0.0, 0.0, False, out.shape[0])
    diff = out2 - ref2
    denom = np.linalg.norm(out2) * np.linalg.norm(ref2)
    cosine = float(np.dot(out2.ravel(), ref2.ravel()) / denom) if denom > 0 else float(np.array_equal(out2, ref2))
    noise = float(np.sum(diff ** 2))
    sqnr = float("inf") if noise == 0 else 10 * math.log10(float(np.sum(ref2 ** 2)) / noise)
    top1 = float(np.mean(out2.argmax(1) == ref2.argmax(1)))
    k = min(5, out2.shape[1])
    top_out = np.argsort(-out2, axis=1)[:, :k]
    top_ref = np.argsort(-ref2, axis=1)[:, :k]
    overlap = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(top_out, top_ref, strict=True)]))
    return ParityMetrics(float(np.abs(diff).max()), float(np.abs(diff).mean()), cosine, sqnr, top1, overlap,
                         True, out.shape[0])
