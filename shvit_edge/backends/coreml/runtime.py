"""Running a package: on Apple platforms through coremltools ``predict``, one compute-unit setting at a time;
anywhere through the ``coreml-sim`` interpreter (:mod:`.sim`), one arithmetic mode at a time."""

from __future__ import annotations

from ...errors import UsageError
from .inspect import describe


#: compute-unit settings of a profile's ``compute_units`` -> coremltools ``ComputeUnit`` names
COMPUTE_UNITS = {"cpu_only": "CPU_ONLY", "cpu_and_gpu": "CPU_AND_GPU", "cpu_and_ne": "CPU_AND_NE", "all": "ALL"}


#: the interpreter's settings: ``coreml-sim`` (per-op fp16 rounding), and the device-like modes of
#: :class:`~.sim.SimOptions` (``flush-subnormals``: Neural Engine-like; ``fp16-accumulation``: a GPU allowing
#: low-precision accumulation)
SIM_MODES = {"flush-subnormals": "flush_subnormals", "fp16-accumulation": "fp16_accumulation"}
SIM_SETTINGS = ("coreml-sim", "coreml-sim:flush-subnormals", "coreml-sim:fp16-accumulation",
                "coreml-sim:flush-subnormals+fp16-accumulation")


def can_run() -> bool:
    """Core ML predicts only on Apple platforms."""
    import platform

    return platform.system() == "Darwin"


def cannot_run_here(path, manifest) -> str | None:
    return None if can_run() else ("Core ML predicts only on macOS/iOS (verify runs the coreml-sim interpreter "
                                    "here, which is no latency measurement)")


def settings_here(profile) -> tuple[str, ...]:
    """What verify runs: each compute-unit setting of the profile (``cpu_only`` if it names none) where Core ML
    predicts; the interpreter elsewhere."""
    return tuple(profile.export.compute_units or ("cpu_only",)) if can_run() else ("coreml-sim",)


def load(path, manifest=None, threads=None, compute_units: str = "cpu_only"):
    """A runner through coremltools ``predict`` on macOS, for one compute-unit setting, or through the
    interpreter for a ``coreml-sim`` setting (anywhere). An image input takes RGB uint8 (N, 3, H, W) pixels; a
    classifier's output is its probabilities in label order."""
    if compute_units in SIM_SETTINGS:
        return load_sim(path, compute_units)
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


def load_sim(path, setting: str = "coreml-sim"):
    """A runner through the ``coreml-sim`` interpreter; its ``report`` is the fp16 headroom over every run."""
    import coremltools as ct
    import numpy as np

    from ..base import Runner
    from .sim import Headroom, Program, SimOptions, to_color_space

    modes = setting.partition(":")[2]
    options = SimOptions(**{SIM_MODES[m]: True for m in modes.split("+") if m})
    program = Program.load(path)
    info = describe(path)
    (inp,) = info["inputs"]
    image = inp["type"] == "imageType"
    classifier = info["classifier"]
    (spec,) = program.inputs
    headroom = Headroom()

    def run(x: np.ndarray) -> np.ndarray:
        outs = []
        for one in ([x[i:i + 1] for i in range(len(x))] if image else [x]):
            feed = to_color_space(one, spec.color_space) if image else np.asarray(one, np.float32)
            result = program.run({spec.name: feed}, options, headroom)
            out = result[classifier["probabilities"]] if classifier else result["logits"]
            outs.append(np.asarray(out, dtype=np.float32).reshape(len(one), -1))
        return np.concatenate(outs)

    shape = (1, 3, inp["height"], inp["width"]) if image else tuple(inp["shape"])
    mode = f", {modes.replace('+', ', ')}" if modes else ""
    return Runner(run, f"coreml-sim (coremltools {ct.__version__} MIL in NumPy{mode})", inp["name"], shape,
                  "uint8" if image else "float32", report=lambda: {"fp16_headroom": headroom.as_json()})
