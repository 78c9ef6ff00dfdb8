"""The library's export as the CLI runs it: :func:`shvit_edge.export.export`, then, for a quantized export, each
artifact verified against the fp32 model it came from (its manifest records the result).

It sits above export and verify (imports run one way: export never imports verify), so library users get the
same checked artifacts as ``shvit-edge export --quantize`` without repeating the CLI's steps.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .export import ExportOptions, ExportReport, Progress, export as export_only
from .verify import VerifyOptions, verify

#: seeded random inputs a quantized artifact is verified on when no image folder is given
RANDOM_SAMPLES = 8


def export(source, profiles, options: ExportOptions, out_dir, *, force: bool = False,
           progress: Progress | None = None, jobs: int = 1, verify_quantized: bool = True,
           images: str | None = None) -> ExportReport:
    """Export ``source`` for every profile (see :func:`shvit_edge.export.export`); with ``options.quantize`` and
    ``verify_quantized``, verify each artifact written against the fp32 model, on ``images`` (default: the
    calibration folder, if it is one; without one, :data:`RANDOM_SAMPLES` seeded random inputs). The results are
    in the report's ``verification`` and in each artifact's manifest."""
    report = export_only(source, profiles, options, out_dir, force=force, progress=progress, jobs=jobs)
    if not (options.quantize and verify_quantized and report.artifacts):
        return report
    folder = images or calibration_folder(options.calibration)
    checks = verify([a.path for a in report.artifacts],
                    VerifyOptions(images=folder, samples=0 if folder else RANDOM_SAMPLES), progress=progress)
    return dataclasses.replace(report, verification=tuple(checks))


def calibration_folder(calibration: str | None) -> str | None:
    """The ``--calibration`` image folder, or None (no calibration, or ``random``)."""
    return calibration if calibration not in (None, "random") and Path(calibration).is_dir() else None
