"""Quantization modes per backend, calibration inputs, and the tolerance class verify judges each mode by.

Each backend quantizes with its own maintained tooling (ONNX: onnxruntime.quantization). A calibrated mode
gets its inputs from an image folder (sorted by name, the first ``count``, preprocessed exactly as verify
does) or, with a warning, from seeded random inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import UsageError

#: --quantize modes implemented per backend (issue 5 lists more; they are not built yet)
MODES: dict[str, tuple[str, ...]] = {"onnx": ("int8", "int8-dynamic")}
#: modes that need calibration inputs
CALIBRATED = ("int8", "w8a8")
#: the profile tolerance class verify applies to an artifact of each mode
TOLERANCE_CLASS = {"fp16": "fp16", "int8": "int8", "int8-dynamic": "int8", "int8-weights": "int8",
                   "palettize-6": "int8", "w8a8": "int8", "palettize-4": "palettize-4"}
DEFAULT_CALIBRATION_SAMPLES = 32


@dataclass(frozen=True)
class Calibration:
    inputs: np.ndarray  # float32 (N, 3, H, W), normalized
    source: str  # the folder, or "random"
    count: int


def check_mode(backend: str, profile_name: str, profile_modes: tuple[str, ...], mode: str) -> None:
    offered = [m for m in MODES.get(backend, ()) if m in profile_modes]
    if mode not in offered:
        raise UsageError(f"target {profile_name} ({backend}) does not offer --quantize {mode}; it offers: "
                         f"{', '.join(offered) or 'none yet'}")


def calibration_inputs(spec: str, count: int, resolution: tuple[int, int], preprocessing,
                       seed: int = 0) -> Calibration:
    """``count`` calibration inputs from the image folder ``spec`` (its first ``count`` images by name) or,
    for ``spec == "random"``, seeded standard-normal inputs (the CLI warns: they calibrate ranges no real
    image has)."""
    from .images import list_images, load_pixels, normalize

    if count < 1:
        raise UsageError(f"--calibration-samples must be at least 1, got {count}")
    h, w = resolution
    if spec == "random":
        rng = np.random.default_rng(seed)
        return Calibration(rng.standard_normal((count, 3, h, w), dtype=np.float32), "random", count)
    images = list_images(spec, "--calibration")[:count]
    x = normalize(load_pixels(images, resolution, preprocessing), preprocessing)
    return Calibration(x, str(spec), len(images))
