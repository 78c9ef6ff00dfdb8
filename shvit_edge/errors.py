"""One exception family for the whole toolkit.

Every error a user can cause or a check can raise is a :class:`ShvitEdgeError`; each subclass carries the
exit code the CLI returns for it, so the CLI never has to guess:

==========================  ====  ==========================================================
class                       exit  meaning
==========================  ====  ==========================================================
:class:`UsageError`         2     a bad option, an unknown variant or target, an impossible value
:class:`InputError`         2     an input file that cannot be used (missing, unreadable, wrong)
:class:`CheckpointError`    2     a checkpoint that cannot be loaded (an :class:`InputError`)
:class:`UnsafeCheckpointError` 2  a checkpoint whose pickle names a type outside the allow-list
:class:`CheckFailed`        1     a check ran and failed (parity, integrity, a leftover BatchNorm)
==========================  ====  ==========================================================
"""

from __future__ import annotations


def describe_exception(exc: BaseException) -> str:
    """A library's exception in one line: its type and first lines, without terminal colour codes (what a
    failed target or artifact reports)."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {' '.join(lines[:3])[:500]}".rstrip(": ")


class ShvitEdgeError(Exception):
    """Base of every error shvit-edge raises on purpose."""

    exit_code: int = 1


class UsageError(ShvitEdgeError):
    """The caller asked for something that cannot be done (exit 2)."""

    exit_code = 2


class InputError(ShvitEdgeError):
    """An input file or value cannot be used (exit 2)."""

    exit_code = 2


class CheckpointError(InputError):
    """A checkpoint cannot be read, or does not hold a matching SHViT (exit 2)."""


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint's pickle refers to a type that is not on the allow-list (exit 2).

    ``types`` lists the offending fully qualified names, as the pickle names them.
    """

    def __init__(self, message: str, types: list[str]):
        super().__init__(message)
        self.types = list(types)


class CheckFailed(ShvitEdgeError):
    """A check ran and its result is a failure (exit 1)."""

    exit_code = 1
