"""Running a package: only on Apple platforms, through coremltools ``predict``, one compute-unit setting at a
time."""

from __future__ import annotations

from ...errors import UsageError
from .inspect import describe


#: compute-unit settings of a profile's ``compute_units`` -> coremltools ``ComputeUnit`` names
COMPUTE_UNITS = {"cpu_only": "CPU_ONLY", "cpu_and_gpu": "CPU_AND_GPU", "cpu_and_ne": "CPU_AND_NE", "all": "ALL"}


def can_run() -> bool:
    """Core ML predicts only on Apple platforms."""
    import platform

    return platform.system() == "Darwin"


def cannot_run_here(path, manifest) -> str | None:
    return None if can_run() else "Core ML predicts only on macOS/iOS"


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

    from ..base import Runner

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
