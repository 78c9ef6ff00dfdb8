"""Child processes that never outlive their parent.

Every process shvit-edge starts (export workers, bench workers, verify's runtime children) calls
:func:`die_with_parent` first: on Linux the kernel then sends it SIGKILL when the parent dies, however the
parent dies (SIGKILL included); elsewhere a daemon thread polls the parent's pid. The race where the parent
dies before the child asks is closed by comparing the parent pid the child was given with its own view.
:func:`parent_alive` lets a child check once more before it publishes anything.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1
_parent_pid: int | None = None


def die_with_parent(parent_pid: int) -> None:
    """Arrange for this process to be killed when ``parent_pid`` (its parent) exits; exit at once if it is
    gone already."""
    global _parent_pid
    _parent_pid = parent_pid
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: fall back to polling
            _poll_parent()
    else:
        _poll_parent()
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


def _poll_parent() -> None:
    def watch():
        while os.getppid() == _parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="shvit-edge-parent-watch", daemon=True).start()


def signal_name(signum: int) -> str:
    """``SIGABRT`` for 6; ``signal N`` for a number with no name (how a dead child is described)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def parent_alive() -> bool:
    """False in a child whose parent has died (True in a process that is no such child)."""
    return _parent_pid is None or os.getppid() == _parent_pid


def peak_rss_mb() -> float:
    """This process's peak resident set in MB. Linux's ``VmHWM`` belongs to the process's own memory map; its
    ``ru_maxrss`` survives ``execve`` and so would report the parent's size at the fork when that is larger."""
    from pathlib import Path

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)  # bytes on macOS, KiB elsewhere
