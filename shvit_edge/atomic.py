"""Atomic outputs: write to a clearly named temporary beside the destination, rename when complete.

An export that fails, or is interrupted (Ctrl-C; SIGTERM once :func:`sigterm_as_interrupt` is active), removes
its temporary; after a SIGKILL the temporary (``.shvit-edge-tmp-<pid>-<name>``) stays until the next run in
that folder calls :func:`remove_stale_temporaries`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Iterator

TMP_PREFIX = ".shvit-edge-tmp-"
_TMP_RE = re.compile(re.escape(TMP_PREFIX) + r"(\d+)-")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so that cleanup runs as for Ctrl-C."""


#: the signal that asked this process to stop, while :func:`sigterm_as_interrupt` is active. A converter that
#: calls back into Python can swallow the exception the handler raises (litert-torch's does, measured); the
#: record survives, and :func:`atomic_outputs` refuses to publish after it.
_stop_requested: int | None = None


def raise_on_signal(signum, frame) -> None:
    """Signal handler: remember the request, then raise Terminated (SIGTERM) or KeyboardInterrupt."""
    global _stop_requested
    _stop_requested = signum
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def check_stop_requested() -> None:
    """Raise again for a stop request whose exception a library swallowed."""
    if _stop_requested is not None:
        raise Terminated() if _stop_requested == signal.SIGTERM else KeyboardInterrupt()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def temporary_path(final: Path) -> Path:
    return final.parent / f"{TMP_PREFIX}{os.getpid()}-{final.name}"


@contextlib.contextmanager
def atomic_outputs(*finals: Path, overwrite: bool = False) -> Iterator[list[Path]]:
    """Yield temporary paths (files or folders) to write; on success each replaces its final path by rename,
    in the order given (put the file that makes the others count, e.g. a manifest, last).

    Anything raised inside, KeyboardInterrupt included, removes every temporary and propagates.
    """
    finals = tuple(Path(f) for f in finals)
    temps = [temporary_path(f) for f in finals]
    for tmp in temps:
        _remove(tmp)
    try:
        yield temps
        check_stop_requested()
        for tmp in temps:
            if not tmp.exists():
                raise FileNotFoundError(f"nothing was written to {tmp}")
        for tmp, final in zip(temps, finals, strict=True):
            publish(tmp, final, overwrite)
    except BaseException:
        for tmp in temps:
            _remove(tmp)
        raise


def publish(tmp: Path, final: Path, overwrite: bool) -> None:
    """Move a finished temporary into place; a folder replacing a folder goes via a second temporary."""
    if final.exists() or final.is_symlink():
        if not overwrite:
            raise FileExistsError(final)
        if final.is_dir() and not final.is_symlink():
            old = final.parent / f"{TMP_PREFIX}{os.getpid()}-old-{final.name}"
            _remove(old)
            os.replace(final, old)
            os.replace(tmp, final)
            _remove(old)
            return
    os.replace(tmp, final)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove temporaries left in ``folder`` by runs that no longer exist (killed with SIGKILL)."""
    removed = []
    if not Path(folder).is_dir():
        return removed
    for entry in Path(folder).iterdir():
        m = _TMP_RE.match(entry.name)
        if m and not _alive(int(m.group(1))):
            _remove(entry)
            removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within this block SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) and SIGINT a
    KeyboardInterrupt, so cleanups run; the request is also remembered (:func:`check_stop_requested`)."""
    global _stop_requested
    try:
        previous = (signal.signal(signal.SIGTERM, raise_on_signal), signal.signal(signal.SIGINT, raise_on_signal))
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    _stop_requested = None
    try:
        yield
        check_stop_requested()
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
        _stop_requested = None


def sha256_of(path: Path) -> str:
    """sha256 of a file; of a folder (an ``.mlpackage``): see :data:`FOLDER_SHA256_METHOD`."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(file.relative_to(path).as_posix().encode("utf-8") + b"\0")
            _update_with_file(digest, file)
    else:
        _update_with_file(digest, path)
    return digest.hexdigest()


FILE_SHA256_METHOD = "sha256 of the file's bytes"
FOLDER_SHA256_METHOD = ("sha256 over the folder's files in sorted relative-path order: for each file its "
                        "POSIX relative path in UTF-8, a NUL byte, then its bytes")


def size_of(path: Path) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _update_with_file(digest, file: Path) -> None:
    with open(file, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
