"""TFLite / LiteRT: a ``.tflite`` converted with litert-torch, run with ai-edge-litert's Interpreter.

The signature ``serving_default`` takes ``image`` and returns ``logits``. ``--layout nhwc`` makes the input
(N, H, W, 3), so Android camera code feeds it without a transpose (the converter folds the permute into the
graph). The batch size is fixed at conversion: LiteRT's ``resize_tensor_input`` on a batch-1 model runs but
gives wrong answers for all but the first image (measured), so export the batch you need.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..manifest import TensorSpec
from ._quiet import quiet
from .base import BackendResult, Runner, modules_available

NAME = "tflite"
SUFFIX = ".tflite"
SIGNATURE = "serving_default"


def is_available() -> bool:
    return modules_available("litert_torch", "ai_edge_litert")


def _named(model):
    import torch

    class Named(torch.nn.Module):
        """Keyword input ``image`` and a dict output ``logits``: litert-torch names the signature after them."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, image):
            return {"logits": self.inner(image)}

    return Named(model).eval()


def export(job, out: Path) -> BackendResult:
    layout = job.options.layout
    example = job.example_input(layout=layout)
    model = _named(job.source.deploy_model(layout=layout))
    with quiet():
        import litert_torch

        converted = litert_torch.signature(SIGNATURE, model, sample_kwargs={"image": example}).convert()
        converted.export(str(out))
    h, w = job.resolution
    batch = job.options.batch
    shape = (batch, 3, h, w) if layout == "nchw" else (batch, h, w, 3)
    return BackendResult(
        inputs=(TensorSpec("image", shape, "float32", layout.upper()),),
        outputs=(TensorSpec("logits", (batch, job.source.num_classes), "float32", "NC"),),
        details={"signature": SIGNATURE, "ops": op_histogram(out)},
    )


def op_histogram(path) -> dict[str, int]:
    """Op counts of the main subgraph, read with LiteRT's own flatbuffer tools."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    counts: dict[str, int] = {}
    for op in model.subgraphs[0].operators:
        name = flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def cannot_run_here(path, manifest) -> str | None:
    return None  # the runtime is a pip package on every platform shvit-edge runs on


def load(path, manifest=None, threads: int | None = None):
    with quiet():
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path), num_threads=threads or 1)
    runner = interpreter.get_signature_runner(SIGNATURE)
    (name, detail), = runner.get_input_details().items()

    def run(x: np.ndarray) -> np.ndarray:
        # copy: the runner's arrays alias the interpreter's buffers
        return np.array(runner(**{name: np.ascontiguousarray(x, dtype=np.float32)})["logits"], copy=True)

    from importlib.metadata import version

    shape = tuple(int(d) for d in detail["shape"])
    return Runner(run, f"ai-edge-litert {version('ai-edge-litert')}", name, shape, np.dtype(detail["dtype"]).name)
