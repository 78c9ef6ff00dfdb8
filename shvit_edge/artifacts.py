"""Finding artifacts: each path given to verify or bench as an artifact (a file or folder with its manifest beside
it) or a folder of them; what is no regular file or folder is refused before anything reads it."""

from __future__ import annotations

import stat
from pathlib import Path

from .atomic import TMP_PREFIX
from .errors import InputError
from .manifest import MANIFEST_SUFFIX, manifest_path


def _is_regular_or_folder(path: Path) -> bool:
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) or stat.S_ISDIR(mode)


def _not_regular(path: Path) -> InputError:
    return InputError(f"{path}: not a regular file or folder (a device, FIFO or socket is no artifact); refused")


def find_artifacts(paths) -> list[Path]:
    """Each PATH as an artifact (it has a manifest beside it) or a folder of artifacts (entries with a manifest
    beside them; anything else there is passed over). An artifact or manifest that is no regular file (or, for
    an artifact, folder) is refused with :class:`InputError`: reading a FIFO or a device could hang."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.name.endswith(MANIFEST_SUFFIX) and path.is_file() and \
                Path(str(path)[:-len(MANIFEST_SUFFIX)]).exists():
            path = Path(str(path)[:-len(MANIFEST_SUFFIX)])  # the manifest was given: verify its artifact
        if manifest_path(path).is_file():
            if not _is_regular_or_folder(path):
                raise _not_regular(path)
            found.append(path)
        elif path.is_dir():
            inside = sorted(p for p in path.iterdir() if not p.name.startswith(TMP_PREFIX)
                            and not p.name.endswith(MANIFEST_SUFFIX) and manifest_path(p).is_file())
            if not inside:
                raise InputError(f"{path}: no artifacts in this folder (an artifact has its manifest, "
                                 f"<artifact>{MANIFEST_SUFFIX}, beside it)")
            for p in inside:
                if not _is_regular_or_folder(p):
                    raise _not_regular(p)
            found.extend(inside)
        elif path.exists() and not _is_regular_or_folder(path):
            raise _not_regular(path)
        elif path.exists():
            raise InputError(f"{path}: not an artifact of shvit-edge (no manifest {manifest_path(path).name} "
                             "beside it)")
        else:
            raise InputError(f"{path}: no such file or folder")
    return list(dict.fromkeys(found))
