"""Running inputs through a loaded artifact as its manifest says: the input the runtime reports checked against
the manifest's, and the inputs fed in the artifact's batch (verify's parent and its runtime child both use it)."""

from __future__ import annotations

import numpy as np

from ..manifest import Manifest, TensorSpec


def _masked(shape, dynamic_axes) -> tuple[int | None, ...]:
    """``shape`` with its dynamic axes as None, so a runtime's shape and a manifest's compare."""
    return tuple(None if i in dynamic_axes else d for i, d in enumerate(shape))


def input_mismatch(shape, dtype: str, spec: TensorSpec) -> bool:
    """Whether the input a runtime reports (``shape``, ``dtype``) is not the manifest's ``spec``."""
    return (_masked(tuple(shape), spec.dynamic_axes), dtype) != (_masked(spec.shape, spec.dynamic_axes), spec.dtype)


def run_batched(runner, x: np.ndarray, manifest: Manifest) -> np.ndarray:
    """Run ``x`` (N, 3, H, W) through ``runner`` in the artifact's batch, padding the last chunk."""
    spec = manifest.inputs[0]
    batch = x.shape[0] if spec.dynamic_axes else manifest.batch
    outs = []
    for start in range(0, x.shape[0], batch):
        chunk = x[start:start + batch]
        real = chunk.shape[0]
        if real < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], batch - real, axis=0)])
        if spec.layout == "NHWC":
            chunk = chunk.transpose(0, 2, 3, 1)
        outs.append(np.asarray(runner(np.ascontiguousarray(chunk)))[:real])
    return np.concatenate(outs)
