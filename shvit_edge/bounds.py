"""Every number that crosses a boundary (a command-line option, a target profile, a manifest) has its range
declared here, once, and is checked against it where it is read: a value outside it, NaN or infinity is a
one-line error with exit 2, never a hang, a traceback or a NaN in ``--json``.

A :class:`Bounds` is used three ways: as a click parameter type (:meth:`Bounds.click`), as a dataclass field's
metadata for :mod:`shvit_edge._strict` (``field(metadata=SEED.meta)``), and directly (:meth:`Bounds.check`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import click

from .errors import UsageError


@dataclass(frozen=True)
class Bounds:
    """A closed range ``[lo, hi]`` (either end may be None: unbounded), or open at ``lo`` when ``lo_open``;
    ``integer``: whole numbers only. Floats must be finite either way."""

    lo: float | None
    hi: float | None
    integer: bool = False
    lo_open: bool = False

    def problem(self, value) -> str | None:
        """What is wrong with ``value`` (None: nothing)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be {'an integer' if self.integer else 'a number'}"
        if self.integer and not isinstance(value, int):
            return "must be an integer"
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, not {value}"
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo) or \
                self.hi is not None and value > self.hi:
            return f"must be {self.describe()}, got {value}"
        return None

    def describe(self) -> str:
        lo = None if self.lo is None else (f"above {self.lo:g}" if self.lo_open else f"at least {self.lo:g}")
        hi = None if self.hi is None else f"at most {self.hi:g}"
        if lo and hi:
            return f"{'above' if self.lo_open else 'from'} {self.lo:g} {'and at most' if self.lo_open else 'to'} " \
                   f"{self.hi:g}"
        return lo or hi or "finite"

    def check(self, name: str, value, error=UsageError):
        """``value``, or ``error`` ("NAME must be ...")."""
        problem = self.problem(value)
        if problem is not None:
            raise error(f"{name} {problem}")
        return value

    @property
    def meta(self) -> dict:
        """Dataclass field metadata that :func:`shvit_edge._strict.from_mapping` checks."""
        return {"bounds": self}

    def click(self) -> click.ParamType:
        return _BoundedType(self)


class _BoundedType(click.ParamType):
    def __init__(self, bounds: Bounds):
        self.bounds = bounds
        self.name = "integer" if bounds.integer else "float"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = value
        else:
            text = str(value).strip()
            try:
                number = int(text) if self.bounds.integer else float(text)
            except ValueError:
                self.fail(f"{value!r} is not {'an integer' if self.bounds.integer else 'a number'}", param, ctx)
        problem = self.bounds.problem(number)
        if problem is not None:
            self.fail(f"{problem}", param, ctx)
        return number


#: seeds of untrained weights and random inputs (numpy's and torch's generators take 0 .. 2**32 - 1 alike)
SEED = Bounds(0, 2 ** 32 - 1, integer=True)
#: random inputs verify feeds besides the images (each one is H x W x 3 float32 in memory, several times)
SAMPLES = Bounds(0, 1024, integer=True)
#: a batch baked into an artifact
BATCH = Bounds(1, 1024, integer=True)
#: a side of the input resolution in pixels (also a multiple of 16: models.variants.parse_resolution)
RESOLUTION_SIDE = Bounds(64, 4096, integer=True)
#: runtime threads
THREADS = Bounds(1, 1024, integer=True)
#: export lanes
JOBS = Bounds(1, 64, integer=True)
WARMUP = Bounds(0, 100_000, integer=True)
ITERATIONS = Bounds(1, 1_000_000, integer=True)
#: seconds of timed inferences per candidate (a day at most)
SECONDS = Bounds(0, 86_400, lo_open=True)
ROUNDS = Bounds(1, 1_000, integer=True)
CALIBRATION_SAMPLES = Bounds(1, 10_000, integer=True)
#: how many layers quantize-report keeps in float, and lists
LAYER_COUNT = Bounds(0, 10_000, integer=True)
#: tolerances
COSINE = Bounds(-1, 1)
MAX_ABS = Bounds(0, None)
FRACTION = Bounds(0, 1)
SQNR_DB = Bounds(-1_000, 1_000)
#: ONNX opsets the exporter writes as asked (torch 2.13's dynamo exporter writes 18 for anything lower)
OPSET = Bounds(18, 23, integer=True)
#: class counts of a classifier head
NUM_CLASSES = Bounds(1, 1_000_000, integer=True)
#: tensor dimensions in a manifest
DIMENSION = Bounds(1, 1 << 20, integer=True)
#: sizes in bytes and seconds recorded in a manifest
SIZE_BYTES = Bounds(0, 1 << 50, integer=True)
NONNEGATIVE_SECONDS = Bounds(0, 1e7)
