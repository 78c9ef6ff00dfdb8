"""Scoped silencing of converter noise, restored on exit: export progress belongs to shvit-edge.

The converters log from Python (torch, torchao loggers; deprecation warnings), print progress on stdout
(litert-torch's rich console), and write from C++ straight to file descriptor 2 (absl, oneDNN, TFLite). Within
:func:`quiet` all of it is held back; if the block raises, the captured C++ output is written to stderr so
nothing that explains a failure is lost (an interrupt is not a failure: it replays nothing). litert-torch's
``convert()`` also resets torch's loggers for good; their state is snapshotted and restored here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings

_LOGGERS = ("torch", "torch._functorch", "torch._dynamo", "torch._inductor", "torch.utils._pytree",
            "torch.onnx", "torchao", "root", "coremltools", "executorch")


@contextlib.contextmanager
def _loggers_restored():
    saved = {}
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = (logger.level, list(logger.handlers), logger.propagate, logger.disabled)
    try:
        yield
    finally:
        for name, (level, handlers, propagate, disabled) in saved.items():
            logger = logging.getLogger(name)
            logger.setLevel(level)
            logger.handlers[:] = handlers
            logger.propagate = propagate
            logger.disabled = disabled


@contextlib.contextmanager
def _fd_captured(fd: int):
    """Send OS-level ``fd`` to a temporary file; replay it if the block raises."""
    stream = sys.stderr if fd == 2 else sys.stdout
    try:
        stream.flush()
        saved = os.dup(fd)
    except (OSError, ValueError, AttributeError):  # no real descriptor (e.g. under a test runner's capture)
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), fd)
        failed = False
        try:
            yield
        except Exception:  # not on Ctrl-C / SIGTERM: the user asked to stop, not for the converter's log
            failed = True
            raise
        finally:
            with contextlib.suppress(Exception):
                stream.flush()
            os.dup2(saved, fd)
            os.close(saved)
            if failed and fd == 2:
                tmp.seek(0)
                os.write(2, tmp.read()[-20000:])


@contextlib.contextmanager
def quiet():
    with contextlib.ExitStack() as stack:
        stack.enter_context(_loggers_restored())
        for name in ("torchao", "torch.utils._pytree", "torch.onnx", "coremltools", "executorch"):
            logging.getLogger(name).setLevel(logging.ERROR)
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        progress = sys.modules.get("litert_torch.progress")
        if progress is not None and hasattr(progress, "console"):
            old = progress.console.quiet
            progress.console.quiet = True
            stack.callback(setattr, progress.console, "quiet", old)
        stack.enter_context(_fd_captured(2))
        stack.enter_context(_fd_captured(1))
        yield
