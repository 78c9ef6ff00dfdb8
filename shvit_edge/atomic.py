"""Atomic outputs: write to a clearly named temporary beside the destination, rename when complete.

An export that fails, or is interrupted (Ctrl-C; SIGTERM once :func:`sigterm_as_interrupt` is active), removes
its temporary; after a SIGKILL the temporary (``.shvit-edge-tmp-<pid>.<namespace>-<name>``) stays until the
next run in that folder calls :func:`remove_stale_temporaries`. ``<namespace>`` names the host and PID
namespace the pid belongs to: a pid is judged alive or dead only where it means something, so a folder shared
between containers or machines never loses another's work in progress.
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
_TMP_RE = re.compile(re.escape(TMP_PREFIX) + r"(\d+)(?:\.([0-9a-f]{12}))?-")
#: a temporary of another host or PID namespace (or of an old version, without one) is removed only when it
#: has not been touched for this long: its pid cannot be checked from here
FOREIGN_STALE_SECONDS = 24 * 3600


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so that cleanup runs as for Ctrl-C."""


#: the signal that asked this process to stop, while :func:`sigterm_as_interrupt` is active. A converter that
#: calls back into Python can swallow the exception the handler raises (litert-torch's does, measured); the
#: record survives, and :func:`atomic_outputs` refuses to publish after it.
_stop_requested: int | None = None


def _namespace_id() -> str:
    """12 hex digits naming this host's boot and this process's PID namespace (where a pid means one
    process)."""
    import socket

    parts = [socket.gethostname()]
    for source in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            parts.append(Path(source).read_text().strip() if "boot_id" in source else os.readlink(source))
        except OSError:
            parts.append("")
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


_NAMESPACE = _namespace_id()


def raise_on_signal(signum, frame) -> None:
    """Signal handler: remember the request, then raise Terminated (SIGTERM) or KeyboardInterrupt."""
    global _stop_requested
    _stop_requested = signum
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def check_stop_requested() -> None:
    """Raise again for a stop request whose exception a library swallowed, or in a worker whose parent died
    (it must never publish then)."""
    from ._process import parent_alive

    if _stop_requested is not None:
        raise Terminated() if _stop_requested == signal.SIGTERM else KeyboardInterrupt()
    if not parent_alive():
        raise Terminated()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


#: the longest file name most file systems take, in bytes
_MAX_NAME_BYTES = 255


def child_path(folder: Path, name: str, what: str = "artifact") -> Path:
    """``folder / name`` for a ``name`` built from data (a profile's or variant's name, a label, anything read
    from a file): refused with :class:`~shvit_edge.errors.UsageError` unless it is one plain file name, so
    nothing is ever written outside ``folder``. Every artifact path is made here."""
    from .errors import UsageError

    problem = None
    if not name or name in (".", ".."):
        problem = "is empty or a folder reference"
    elif "/" in name or "\\" in name or "\0" in name:
        problem = "holds a path separator or NUL"
    elif ".." in name:
        problem = "holds '..'"
    elif name.startswith(TMP_PREFIX):
        problem = f"starts with {TMP_PREFIX}"
    elif any(ord(c) < 32 for c in name):
        problem = "holds a control character"
    elif len(name.encode("utf-8", "surrogatepass")) > _MAX_NAME_BYTES:
        problem = f"is longer than {_MAX_NAME_BYTES} bytes"
    if problem is not None:
        raise UsageError(f"the {what} name {name!r} {problem}: it must be a plain file name inside {folder}")
    path = Path(folder) / name
    if path.parent != Path(folder) or path.name != name:
        raise UsageError(f"the {what} name {name!r} is not a plain file name inside {folder}")
    return path


def temporary_path(final: Path, tag: str = "") -> Path:
    return final.parent / f"{TMP_PREFIX}{os.getpid()}.{_NAMESPACE}-{tag}{final.name}"


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
            old = temporary_path(final, "old-")
            _remove(old)
            os.replace(final, old)
            os.replace(tmp, final)
            _remove(old)
            return
    os.replace(tmp, final)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove temporaries left in ``folder`` by runs that no longer exist (killed with SIGKILL). A temporary
    of another host or PID namespace is removed only once it is :data:`FOREIGN_STALE_SECONDS` old."""
    import time

    removed = []
    if not Path(folder).is_dir():
        return removed
    for entry in Path(folder).iterdir():
        m = _TMP_RE.match(entry.name)
        if not m:
            continue
        if m.group(2) == _NAMESPACE:
            stale = not _alive(int(m.group(1)))
        else:
            try:
                stale = time.time() - entry.lstat().st_mtime > FOREIGN_STALE_SECONDS
            except OSError:
                continue
        if stale:
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
    """sha256 of a regular file; of a folder (an ``.mlpackage``): see :data:`FOLDER_SHA256_METHOD`.

    Anything else (a FIFO, a device, a folder holding one or a symlink) is refused with
    :class:`~shvit_edge.errors.InputError`: reading it could hang, and it is no artifact."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        for relative, file in _folder_files(path):
            name = relative.encode("utf-8")
            digest.update(len(name).to_bytes(8, "big") + name + file.stat().st_size.to_bytes(8, "big"))
            _update_with_file(digest, file)
    else:
        _require_regular(path)
        _update_with_file(digest, path)
    return digest.hexdigest()


FILE_SHA256_METHOD = "sha256 of the file's bytes"
FOLDER_SHA256_METHOD = ("sha256 over the folder's files in sorted relative-path order, each framed: the 8-byte "
                        "big-endian length of its POSIX relative path in UTF-8, the path, the 8-byte big-endian "
                        "length of its bytes, then its bytes")
#: the unframed folder digest of schema 1 (two files could be merged into one without changing it): refused
LEGACY_FOLDER_SHA256_METHOD = ("sha256 over the folder's files in sorted relative-path order: for each file its "
                               "POSIX relative path in UTF-8, a NUL byte, then its bytes")


def _require_regular(path: Path) -> None:
    import stat

    from .errors import InputError

    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        raise InputError(f"{path}: not a regular file (a device, FIFO or socket is no artifact)")


def _folder_files(folder: Path) -> list[tuple[str, Path]]:
    """(POSIX relative path, path) of every file under ``folder``, sorted; a symlink or any other non-regular
    entry is refused, so nothing outside the folder or unreadable is ever hashed."""
    from .errors import InputError

    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            entry = Path(root) / name
            if entry.is_symlink() or not (entry.is_dir() if name in dirs else entry.is_file()):
                raise InputError(f"{folder}: holds {entry.relative_to(folder).as_posix()}, which is not a regular "
                                 "file or folder (a symlink, FIFO or device is no part of an artifact)")
        found.extend((Path(root, f).relative_to(folder).as_posix(), Path(root, f)) for f in files)
    return sorted(found)


def size_of(path: Path) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(file.stat().st_size for _, file in _folder_files(path))
    return path.stat().st_size


def _update_with_file(digest, file: Path) -> None:
    with open(file, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
