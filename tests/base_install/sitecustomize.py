"""The base install, simulated: with SHVIT_EDGE_BASE_INSTALL=1 in the environment, the converters and runtimes
of every extra cannot be imported, as if not installed: each top-level module is ``None`` in ``sys.modules``,
so ``import`` raises ModuleNotFoundError and ``importlib.util.find_spec`` returns None (torch itself asks
find_spec about optional modules). Put this folder on PYTHONPATH; child processes inherit it.

tests/test_base_install.py runs the base tier this way: what the toolkit does without any extra, and the tests
that need one skipped with the extra named.
"""

import os
import sys

#: the top-level modules the extras (coreml, executorch, tflite, onnx, report) install
BLOCKED = ("coremltools", "executorch", "torchao", "litert_torch", "ai_edge_litert", "ai_edge_quantizer",
           "ai_edge_torch", "tensorflow", "onnx", "onnxruntime", "onnxscript", "matplotlib")

if os.environ.get("SHVIT_EDGE_BASE_INSTALL") == "1":
    for name in BLOCKED:
        sys.modules[name] = None
