"""Readers of the result files that other benchmark tools write: each turns one file into :class:`Record` values.

A format is recognised by its content, never by its file name (:func:`detect`), and read by :func:`parse`, which
refuses anything malformed, truncated or out of bounds with a one-line :class:`~shvit_edge.errors.InputError`
naming the file and the format (and never raises anything else, whatever the bytes). Every time is converted
to milliseconds and every memory size to MB (2**20 bytes, as ``bench`` counts them); what a record has no
field for is kept in its ``extra``. docs/ingest-formats.md maps each tool's fields to the record's.

The formats and the code that writes each one (the published definition these readers follow):

``executorch-android-benchmark``
    ``benchmark_results.json`` of ExecuTorch's Android benchmark app (pytorch/executorch,
    extension/benchmark/android/benchmark/app/src/main/java/org/pytorch/minibench/: ``BenchmarkMetric``,
    ``ModelRunner``, ``LlmBenchmark``; Gson writes a list of metric entries). Also the first spelling
    (pytorch/executorch PR 5332: ``actual``/``target``, ``arch``/``device`` at the top level).
``executorch-ios-xctest``
    ``xcodebuild test`` output of ExecuTorch's iOS benchmark (extension/benchmark/apple/Benchmark/: tests
    named by ``DynamicTestCase.m`` and ``ResourceTestCase.m``, measured by ``Tests/GenericTests.mm``): XCTest's
    ``Test Case '-[Class test]' measured [Metric, unit] average: ..., values: [...]`` lines. Any other XCTest
    performance test is read too, named by its test.
``xcresulttool-metrics``
    ``xcrun xcresulttool get test-results metrics --path X.xcresult`` (Xcode 16 and later): a list of tests,
    each with ``testRuns`` (``device``, ``metrics`` with their raw ``measurements``).
``litert-benchmark-model``
    stdout of TFLite/LiteRT ``benchmark_model`` (tensorflow/lite/tools/benchmark/benchmark_model.cc and
    ``BenchmarkLoggingListener``, the ``Stat``/``StatWithPercentiles`` lines of
    tensorflow/core/util/stats_calculator.h, google-ai-edge/LiteRT tflite/tools/benchmark/).
``litert-benchmark-proto``
    the ``--result_file_path`` file of ``benchmark_model`` and ``benchmark_litert_model``: a binary
    ``tflite.tools.benchmark.BenchmarkResult`` (tensorflow/lite/tools/benchmark/proto/benchmark_result.proto,
    written by ``ProtoBenchmarkReporter`` in LiteRT tflite/tools/benchmark/benchmark_tflite_model.cc and by
    ``BenchmarkLoggingListener`` in litert/tools/benchmark_litert_model.h). Read with ``google.protobuf``
    through a descriptor built here (:func:`benchmark_result_class`).
``litert-benchmark-json``
    the ``--result_json`` file of LiteRT's Python CompiledModel benchmark
    (google-ai-edge/LiteRT litert/python/tools/benchmark_litert_model.py, console script
    ``litert-benchmark``).
``coremltools-benchmarker``
    coremltools' ``MLModelBenchmarker`` (coremltools/models/ml_program/experimental/perf_utils.py) has no file
    format of its own: the file is ``json.dumps`` of an object holding ``dataclasses.asdict`` of what
    ``benchmark_load``/``benchmark_predict`` return, with the model and compute units (docs/ingest-formats.md).
``qai-hub-profile``
    ``ProfileJob.download_profile()`` of Qualcomm AI Hub, saved with ``json.dump`` (the dict of the
    ``qai_hub`` client's ``_profile_pb_to_python_dict``); a hosted service's profile (``HOSTED_ESTIMATE``).
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from shvit_edge.errors import InputError
from shvit_edge.harness.records import FAILED, HOSTED_ESTIMATE, IN_APP_WALL_TIME, OK, Record

ANDROID = "executorch-android-benchmark"
IOS_XCTEST = "executorch-ios-xctest"
XCRESULT = "xcresulttool-metrics"
LITERT_STDOUT = "litert-benchmark-model"
LITERT_PROTO = "litert-benchmark-proto"
LITERT_JSON = "litert-benchmark-json"
COREML = "coremltools-benchmarker"
QAI_HUB = "qai-hub-profile"

#: the formats this module reads, each the ``source_tool`` of its records
FORMATS: tuple[str, ...] = (ANDROID, IOS_XCTEST, XCRESULT, LITERT_STDOUT, LITERT_PROTO, LITERT_JSON, COREML,
                            QAI_HUB)

#: the bounds of the work one file may ask for
MAX_RECORDS = 100_000          # records in a file, and entries in any one list of a JSON document
MAX_LINE_BYTES = 1 << 20       # a longer line (of any text format, JSON included) is refused
MAX_FILE_BYTES = 256 << 20
MAX_PROTO_BYTES = 1 << 16      # a BenchmarkResult is about a hundred bytes

MB = float(1 << 20)
_TIME_TO_MS = {"s": 1e3, "sec": 1e3, "seconds": 1e3, "ms": 1.0, "us": 1e-3, "µs": 1e-3, "μs": 1e-3,
               "ns": 1e-6}
#: XCTest's ``kB`` is 1000 bytes (its values are whole bytes / 1000: 55266.424 kB)
_BYTES = {"b": 1.0, "bytes": 1.0, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 1024.0, "mib": MB, "gib": 1024 * MB}


# --- errors and bounds ---------------------------------------------------------------------------------------

class _Ctx:
    """Where a reader is: the file and the format every refusal names."""

    __slots__ = ("name", "fmt")

    def __init__(self, name: str, fmt: str) -> None:
        self.name, self.fmt = name, fmt

    def fail(self, detail: str) -> NoReturn:
        raise InputError(f"{self.name}: {self.fmt}: {_one_line(detail)}")


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


def _finite(value: float, where: str, ctx: _Ctx, *, time: bool = False) -> float:
    if not math.isfinite(value):
        ctx.fail(f"{where} is {value!r}, not a finite number")
    if time and value < 0:
        ctx.fail(f"{where} is {value!r}: it cannot be negative")
    return value


def _text(data: bytes, ctx: _Ctx) -> str:
    """The file as text: UTF-8 (a byte-order mark dropped), no line longer than MAX_LINE_BYTES."""
    if len(data) > MAX_FILE_BYTES:
        ctx.fail(f"larger than {MAX_FILE_BYTES >> 20} MB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        ctx.fail(f"not UTF-8 text (byte {exc.start})")
    if len(text) > MAX_LINE_BYTES and any(len(line) > MAX_LINE_BYTES for line in text.splitlines()):
        ctx.fail(f"a line is longer than {MAX_LINE_BYTES >> 20} MB")
    return text


# --- JSON ------------------------------------------------------------------------------------------------------

class _Constant(ValueError):
    """A NaN or Infinity in JSON: Python's json reads them, JSON does not have them."""


def _refuse_constant(token: str) -> NoReturn:
    raise _Constant(token)


def _load_json(data: bytes, ctx: _Ctx) -> Any:
    text = _text(data, ctx)
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except _Constant as exc:
        ctx.fail(f"{exc} is not a JSON number")
    except RecursionError:
        ctx.fail("JSON nested too deeply")
    except ValueError as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        ctx.fail(f"not valid JSON ({getattr(exc, 'msg', exc)}{where}; truncated?)")


def _obj(value: Any, where: str, ctx: _Ctx) -> dict:
    if not isinstance(value, dict):
        ctx.fail(f"{where} is {_kind(value)}, not an object")
    return value


def _list(value: Any, where: str, ctx: _Ctx) -> list:
    if not isinstance(value, list):
        ctx.fail(f"{where} is {_kind(value)}, not a list")
    if len(value) > MAX_RECORDS:
        ctx.fail(f"{where} has {len(value)} entries (more than {MAX_RECORDS})")
    return value


def _req(d: dict, key: str, where: str, ctx: _Ctx) -> Any:
    if key not in d:
        ctx.fail(f"{where} has no {key!r}")
    return d[key]


def _str(value: Any, where: str, ctx: _Ctx) -> str:
    if not isinstance(value, str):
        ctx.fail(f"{where} is {_kind(value)}, not a string")
    return value


def _opt_str(d: dict, key: str, where: str, ctx: _Ctx) -> str | None:
    value = d.get(key)
    return None if value is None else _str(value, f"{where}.{key}", ctx)


def _num(value: Any, where: str, ctx: _Ctx, *, time: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        ctx.fail(f"{where} is {_kind(value)}, not a number")
    try:
        number = float(value)
    except OverflowError:
        ctx.fail(f"{where} is too large")
    return _finite(number, where, ctx, time=time)


def _opt_num(d: dict, key: str, where: str, ctx: _Ctx, *, time: bool = False) -> float | None:
    value = d.get(key)
    return None if value is None else _num(value, f"{where}.{key}", ctx, time=time)


def _int(value: Any, where: str, ctx: _Ctx, *, minimum: int | None = None) -> int:
    number = _num(value, where, ctx)
    if not number.is_integer() or abs(number) > 2 ** 63:
        ctx.fail(f"{where} is {value!r}, not a whole number")
    if minimum is not None and number < minimum:
        ctx.fail(f"{where} is {value!r}, less than {minimum}")
    return int(number)


def _opt_int(d: dict, key: str, where: str, ctx: _Ctx, *, minimum: int | None = None) -> int | None:
    value = d.get(key)
    return None if value is None else _int(value, f"{where}.{key}", ctx, minimum=minimum)


def _opt_bool(d: dict, key: str, where: str, ctx: _Ctx) -> bool | None:
    value = d.get(key)
    if value is not None and not isinstance(value, bool):
        ctx.fail(f"{where}.{key} is {_kind(value)}, not a boolean")
    return value


def _nums(value: Any, where: str, ctx: _Ctx, *, time: bool = False, scale: float = 1.0) -> list[float]:
    return [_finite(_scale(_num(v, f"{where}[{i}]", ctx, time=time), scale), f"{where}[{i}]", ctx)
            for i, v in enumerate(_list(value, where, ctx))]


def _scale(value: float, scale: float) -> float:
    """A value in another unit, to 12 significant digits: 0.006264 s is 6.264 ms, not 6.263999999999999."""
    return value if scale == 1.0 else float(f"{value * scale:.12g}")


def _positive(value: int | None) -> int | None:
    """A thread count: zero or negative is the tool's "default", no count."""
    return value if value is not None and value > 0 else None


def _ms(value: float | None, scale: float) -> float | None:
    return None if value is None else _scale(value, scale)


def _dropnone(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None and v != {} and v != []}


def _mean(values: list[float]) -> float | None:
    try:
        return math.fsum(values) / len(values) if values else None
    except OverflowError:
        return math.inf   # refused with every other non-finite value by _check_finite


def _non_finite(value: Any, where: str) -> str | None:
    """Where in a record's value a number is not finite (a unit conversion or a sum can overflow), or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else where
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, item in items:
        found = _non_finite(item, f"{where}.{key}")
        if found:
            return found
    return None


def _check_finite(record: Record, ctx: _Ctx) -> Record:
    for name in ("load_ms", "first_inference_ms", "peak_memory_mb", "latencies_ms", "reported_ms", "extra"):
        found = _non_finite(getattr(record, name), name)
        if found:
            ctx.fail(f"{found} is out of range once converted")
    return record


# --- names: what a file name or test name says -----------------------------------------------------------------

#: ExecuTorch's benchmark apps name a model NAME_BACKEND_QUANTIZATION (BenchmarkMetric.extractBackendAndQuantization)
_ET_MODEL = re.compile(r"(?P<name>\w+)_(?P<backend>[\w+]+)_(?P<quantization>\w+)")
_PRECISIONS = {"fp32", "fp16", "bf16", "float32", "float16", "bfloat16"}


def _precision_or_quantization(value: str | None) -> tuple[str | None, str | None]:
    if not value:
        return None, None
    return (value, None) if value.lower() in _PRECISIONS else (None, value)


def _basename(path: str) -> str:
    return re.split(r"[\\/]", path.rstrip("/\\"))[-1] or path


# --- 1. ExecuTorch Android benchmark app -----------------------------------------------------------------------

_ANDROID_LOAD = ("model_load_time(ms)", "llm_model_load_time(ms)")
_ANDROID_EXTRA = {"trimmean_inference_latency(ms)": "trimmean_inference_latency_ms",
                  "generate_time(ms)": "generate_time_ms", "token_per_sec": "token_per_sec",
                  "peak_load_mem_usage(mb)": "peak_load_mem_usage_mb"}


@dataclass
class _AndroidRun:
    model: dict
    device: dict
    device_extra: dict
    spelling: str
    metrics: dict = field(default_factory=dict)
    statuses: list = field(default_factory=list)
    targets: dict = field(default_factory=dict)


def _android_value(entry: dict, where: str, ctx: _Ctx) -> tuple[Any, Any, str]:
    if "actualValue" in entry:
        return entry["actualValue"], entry.get("targetValue"), "actualValue"
    if "actual" in entry:
        return entry["actual"], entry.get("target"), "actual"
    ctx.fail(f"{where} has no 'actualValue' (nor the older 'actual')")


def _android_device(entry: dict, where: str, ctx: _Ctx) -> tuple[dict, dict]:
    info = entry.get("deviceInfo")
    if info is not None:
        where, source = f"{where}.deviceInfo", _obj(info, f"{where}.deviceInfo", ctx)
    else:
        source = entry   # the first spelling: device and arch beside the metric
    brand, arch = _opt_str(source, "device", where, ctx), _opt_str(source, "arch", where, ctx)
    os_text = _opt_str(source, "os", where, ctx)
    device, extra = {"manufacturer": brand or None}, {}
    if arch:
        model, _, release = arch.partition(" / ")   # the first spelling: "SM-S901U1 / 12"
        device["model"] = model.strip() or None
        if release.strip():
            device["os"], device["os_version"] = "Android", release.strip()
    if os_text:
        os_name, _, version = os_text.partition(" ")
        device["os"], device["os_version"] = os_name, version or device.get("os_version")
    for key in ("totalMem", "availMem"):
        value = _opt_int(source, key, where, ctx, minimum=0)
        if value:
            extra[f"{key}_bytes"] = value
    return _dropnone(device), extra


def _android_entry(entry: Any, i: int, runs: dict, ctx: _Ctx) -> None:
    where = f"entry {i}"
    entry = _obj(entry, where, ctx)
    bm = _obj(_req(entry, "benchmarkModel", where, ctx), f"{where}.benchmarkModel", ctx)
    model = {"name": _str(_req(bm, "name", f"{where}.benchmarkModel", ctx), f"{where}.benchmarkModel.name", ctx),
             "backend": _opt_str(bm, "backend", f"{where}.benchmarkModel", ctx) or None,
             "quantization": _opt_str(bm, "quantization", f"{where}.benchmarkModel", ctx) or None}
    metric = _str(_req(entry, "metric", where, ctx), f"{where}.metric", ctx)
    raw, target, spelling = _android_value(entry, where, ctx)
    non_negative = metric.endswith("(ms)") or metric.startswith("peak_") or metric == "token_per_sec"
    value = _num(raw, f"{where}.{spelling} ({metric})", ctx, time=non_negative)
    device, device_extra = _android_device(entry, where, ctx)
    key = json.dumps([model, device], sort_keys=True)
    run = runs.setdefault(key, _AndroidRun(model, device, device_extra, spelling))
    if metric == "load_status":
        run.statuses.append(_int(raw, f"{where}.{spelling} (load_status)", ctx))
    else:
        run.metrics[metric] = value
    if target is not None and _num(target, f"{where}.target", ctx) != 0:
        run.targets[metric] = float(target)


def _android_record(run: _AndroidRun) -> Record:
    metrics = dict(run.metrics)
    mean = metrics.pop("avg_inference_latency(ms)", None)
    loads = [metrics.pop(k) for k in _ANDROID_LOAD if k in metrics]
    peak = metrics.pop("peak_inference_mem_usage(mb)", None)
    extra = {_ANDROID_EXTRA[k]: metrics.pop(k) for k in list(metrics) if k in _ANDROID_EXTRA}
    if "ram_pss_usage(mb)" in metrics:   # PSS after the runs minus PSS before loading: a delta, may be negative
        extra["ram_pss_delta_mb"] = metrics.pop("ram_pss_usage(mb)")
    if len(loads) > 1:
        extra["llm_model_load_time_ms"] = loads[1]
    bad = [s for s in run.statuses if s != 0]
    status, error = (FAILED, f"load_status {bad[0]}: ExecuTorch could not load the model's forward method "
                             f"(error code {bad[0]:#x})") if bad else (OK, None)
    precision, quantization = _precision_or_quantization(run.model["quantization"])
    extra.update(run.device_extra)
    extra.update(_dropnone({"benchmark_model": _dropnone(run.model), "load_status": run.statuses, "metrics": metrics,
                            "target_values": run.targets, "spelling": run.spelling}))
    return Record(source_tool=ANDROID, meaning=IN_APP_WALL_TIME, status=status, error=error,
                  model=run.model["name"], target="executorch", runtime="executorch",
                  setting=run.model["backend"], device=run.device, precision=precision, quantization=quantization,
                  load_ms=loads[0] if loads else None, reported_ms=_dropnone({"mean": mean}),
                  peak_memory_mb=peak, extra=extra)


def _parse_android(data: bytes, ctx: _Ctx) -> list[Record]:
    entries = _list(_load_json(data, ctx), "the document", ctx)
    runs: dict[str, _AndroidRun] = {}
    for i, entry in enumerate(entries):
        _android_entry(entry, i, runs, ctx)
    return [_android_record(run) for run in runs.values()]


# --- 2 and 3. XCTest performance metrics (xcodebuild output, xcresulttool) --------------------------------------

_CLOCK_IDS = {"com.apple.dt.XCTMetric_Clock.time.monotonic", "com.apple.XCTPerformanceMetric_WallClockTime"}
_CLOCK_LABELS = {"clock monotonic time", "time", "clock time"}
_OS_NAMES = ("iOS", "iPadOS", "macOS", "visionOS", "tvOS", "watchOS")
#: DynamicTestCase.m: test_<test>_<resources>_<systemName>_<systemVersion>_<machine>, punctuation made "_"
_ET_TEST = re.compile(rf"test_(?P<method>[A-Za-z]+)_(?P<resource>\w+?)_(?P<os>{'|'.join(_OS_NAMES)})_"
                      r"(?P<version>\d+(?:_\d+)*)_(?P<machine>[A-Za-z][A-Za-z0-9]*(?:_\d+)?)")


@dataclass
class _XcMetric:
    label: str
    unit: str
    identifier: str | None
    values: list[float]
    average: float | None = None
    rsd_percent: float | None = None


@dataclass
class _XcTest:
    test: str                      # the test method, as XCTest names it
    metrics: list[_XcMetric] = field(default_factory=list)
    failed: bool = False
    errors: list[str] = field(default_factory=list)
    device: dict = field(default_factory=dict)
    device_extra: dict = field(default_factory=dict)
    display: str | None = None     # the full identifier (xcresulttool: Class/test)


@dataclass
class _XcGroup:
    model: str
    identity: dict
    device: dict
    tests: list = field(default_factory=list)
    latencies: list = field(default_factory=list)
    averages: list = field(default_factory=list)
    loads: list = field(default_factory=list)
    peaks: list = field(default_factory=list)
    other: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    failed: bool = False
    device_extra: dict = field(default_factory=dict)


def _et_identity(test: str) -> dict | None:
    """What an ExecuTorch benchmark test's name says: method, model file, backend, quantization, device."""
    m = _ET_TEST.fullmatch(test.removesuffix("()"))
    if m is None:
        return None
    stem = m["resource"].removesuffix("_pte")
    ident = {"method": m["method"], "stem": stem, "file": f"{stem}.pte" if m["resource"].endswith("_pte") else None}
    name = _ET_MODEL.fullmatch(stem)
    ident.update(name.groupdict() if name else {"name": stem, "backend": None, "quantization": None})
    device = {"manufacturer": "Apple", "os": m["os"], "os_version": m["version"].replace("_", ".")}
    if m["os"] == "macOS" or re.fullmatch(r"arm64e?|x86_64|i386", m["machine"]):
        device["arch"] = m["machine"]   # a Mac, or a simulator: uname's machine is the host's architecture
    else:
        device["model"] = re.sub(r"^([A-Za-z]+\d+)_(\d+)$", r"\1,\2", m["machine"])   # iPhone15,4
    ident["device"] = device
    return ident


def _xc_kind(metric: _XcMetric) -> str:
    label = metric.label.strip().lower()
    if metric.identifier in _CLOCK_IDS or (metric.identifier is None and label in _CLOCK_LABELS):
        return "clock"
    if (metric.identifier or "").endswith("physical_peak") or label == "memory peak physical":
        return "peak"
    return "other"


def _unit_scale(unit: str, table: dict) -> float | None:
    """The factor from ``unit`` to the table's unit (ms, bytes), or None when it is not one of the table's."""
    unit = unit.strip()
    return table.get(unit) or table.get(unit.lower())


def _xc_scaled(metric: _XcMetric, table: dict, what: str, ctx: _Ctx) -> list[float]:
    scale = _unit_scale(metric.unit, table)
    if scale is None:
        ctx.fail(f"{metric.label!r} is in {metric.unit!r}, not a unit of {what}")
    values = [_scale(v, scale) for v in metric.values]
    if any(v < 0 for v in values):
        ctx.fail(f"{metric.label!r} has a negative value")
    return values


def _xc_group(groups: dict, test: _XcTest) -> tuple[_XcGroup, str]:
    ident = _et_identity(test.test)
    method = ident["method"] if ident else "forward"
    device = {**(ident["device"] if ident else {}), **test.device}
    model = (ident["name"] if ident else test.test.removesuffix("()"))
    key = json.dumps([ident["stem"] if ident else test.test, device], sort_keys=True)
    group = groups.get(key)
    if group is None:
        group = groups[key] = _XcGroup(model, ident or {}, device)
    return group, method


def _xc_add(groups: dict, test: _XcTest, ctx: _Ctx) -> None:
    group, method = _xc_group(groups, test)
    group.tests.append(test.display or test.test)
    group.device_extra.update(test.device_extra)
    group.failed |= test.failed
    group.errors.extend(test.errors or ([f"{test.test} failed"] if test.failed else []))
    for metric in test.metrics:
        kind = _xc_kind(metric)
        if kind == "clock":
            values = _xc_scaled(metric, _TIME_TO_MS, "time", ctx)
            if method == "load":
                group.loads.extend(values or _xc_average(metric))
            elif method == "forward":
                group.latencies.extend(values)
                if not values:
                    group.averages.extend(_xc_average(metric))
            else:
                group.other.append(_xc_other(method, metric, values, "ms"))
        elif kind == "peak" and method == "forward":
            group.peaks.extend(_scale(v, 1 / MB) for v in _xc_scaled(metric, _BYTES, "memory", ctx))
        else:
            group.other.append(_xc_other(method, metric, metric.values, metric.unit))


def _xc_average(metric: _XcMetric) -> list[float]:
    """The printed average (ms) of a clock metric without values: rounded by XCTest, used only then."""
    scale = _unit_scale(metric.unit, _TIME_TO_MS)
    return [] if metric.average is None or scale is None else [_scale(metric.average, scale)]


def _xc_other(method: str, metric: _XcMetric, values: list[float], unit: str) -> dict:
    return _dropnone({"method": method, "metric": metric.label, "identifier": metric.identifier, "unit": unit,
                      "values": values, "relative_standard_deviation_percent": metric.rsd_percent})


def _xc_record(fmt: str, group: _XcGroup) -> Record:
    ident = group.identity
    precision, quantization = _precision_or_quantization(ident.get("quantization"))
    extra = dict(group.device_extra)
    extra.update(_dropnone({"tests": group.tests, "model_file": ident.get("file"),
                            "load_samples_ms": group.loads if len(group.loads) > 1 else None,
                            "other_metrics": group.other}))
    return Record(source_tool=fmt, meaning=IN_APP_WALL_TIME, status=FAILED if group.failed else OK,
                  error=_one_line("; ".join(group.errors), 500) if group.failed else None, model=group.model,
                  target="executorch" if ident.get("file") else None,
                  runtime="executorch" if ident.get("file") else None, setting=ident.get("backend"),
                  device=group.device, precision=precision, quantization=quantization, load_ms=_mean(group.loads),
                  latencies_ms=tuple(group.latencies), reported_ms=_dropnone({"mean": _mean(group.averages)}),
                  peak_memory_mb=max(group.peaks) if group.peaks else None, extra=extra)


def _xc_records(fmt: str, tests: Iterable[_XcTest], ctx: _Ctx) -> list[Record]:
    groups: dict[str, _XcGroup] = {}
    for test in tests:
        _xc_add(groups, test, ctx)
        if len(groups) > MAX_RECORDS:
            ctx.fail(f"more than {MAX_RECORDS} records")
    return [_xc_record(fmt, g) for g in groups.values()]


# --- 2. xcodebuild test output ------------------------------------------------------------------------------

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_XC_CASE = r"Test [Cc]ase '-\[(?P<cls>[^\]\s']+) (?P<test>[^\]\s']+)\]'"
_XC_MEASURED = re.compile(_XC_CASE + r" measured \[(?P<label>[^\]]*)\] average: (?P<avg>[^,\s]*), relative standard "
                          r"deviation: (?P<rsd>[^%,\s]*)%, values: \[(?P<values>[^\]]*)\]"
                          r"(?:, performanceMetricID:(?P<id>[^,\s]+))?")
_XC_END = re.compile(_XC_CASE + r" (?P<result>passed|failed|skipped)\b")
_XC_ERROR = re.compile(r": error: -\[(?P<cls>[^\]\s]+) (?P<test>[^\]\s]+)\] : (?P<message>.*)")


def _text_num(token: str, where: str, ctx: _Ctx, *, time: bool = False) -> float:
    token = token.strip()
    if not re.fullmatch(_NUMBER, token):
        ctx.fail(f"{where} is {token[:40]!r}, not a number")
    return _finite(float(token), where, ctx, time=time)


def _xc_measured(m: re.Match, where: str, ctx: _Ctx) -> _XcMetric:
    label, _, unit = m["label"].rpartition(", ")
    if not label:
        ctx.fail(f"{where}: the metric [{m['label']}] names no unit")
    is_time = _unit_scale(unit, _TIME_TO_MS) is not None
    raw = [v for v in m["values"].split(",") if v.strip()]
    if len(raw) > MAX_RECORDS:
        ctx.fail(f"{where} has more than {MAX_RECORDS} values")
    values = [_text_num(v, f"{where} value {i}", ctx, time=is_time) for i, v in enumerate(raw)]
    return _XcMetric(label, unit, m["id"], values, _text_num(m["avg"], f"{where} average", ctx, time=is_time),
                     _text_num(m["rsd"], f"{where} relative standard deviation", ctx))


def _parse_xctest(data: bytes, ctx: _Ctx) -> list[Record]:
    tests: dict[str, _XcTest] = {}
    for n, line in enumerate(_text(data, ctx).splitlines(), 1):
        if "' measured [" in line:
            m = _XC_MEASURED.search(line)
            if m is None:
                ctx.fail(f"line {n}: a malformed 'measured [' line (truncated?)")
            tests.setdefault(m["test"], _XcTest(m["test"])).metrics.append(_xc_measured(m, f"line {n}", ctx))
        elif (m := _XC_ERROR.search(line)) is not None:
            tests.setdefault(m["test"], _XcTest(m["test"])).errors.append(m["message"].strip())
        elif (m := _XC_END.search(line)) is not None and m["result"] == "failed":
            tests.setdefault(m["test"], _XcTest(m["test"])).failed = True
    for test in tests.values():
        test.failed = test.failed or bool(test.errors)   # an assertion's error line, its test's end line cut off
    kept = [t for t in tests.values() if t.metrics or (t.failed and _et_identity(t.test))]
    if not kept:
        ctx.fail("no XCTest 'measured [' line found (and no failed benchmark test)")
    return _xc_records(IOS_XCTEST, kept, ctx)


# --- 3. xcresulttool get test-results metrics ------------------------------------------------------------------

def _xcresult_device(run: dict, where: str, ctx: _Ctx) -> tuple[dict, dict]:
    raw = run.get("device")
    if raw is None:
        return {}, {}
    dev = _obj(raw, f"{where}.device", ctx)
    get = lambda key: _opt_str(dev, key, f"{where}.device", ctx)  # noqa: E731
    device = _dropnone({"manufacturer": "Apple", "model": get("modelName"), "os": get("platform"),
                        "os_version": get("osVersion"), "arch": get("architecture")})
    extra = _dropnone({"device_name": get("deviceName"), "device_id": get("deviceId"),
                       "os_build": get("osBuildNumber")})
    return device, extra


def _xcresult_metric(raw: Any, where: str, ctx: _Ctx) -> _XcMetric:
    metric = _obj(raw, where, ctx)
    label = _opt_str(metric, "displayName", where, ctx) or _opt_str(metric, "identifier", where, ctx) or "?"
    unit = _str(_req(metric, "unitOfMeasurement", where, ctx), f"{where}.unitOfMeasurement", ctx)
    values = _nums(_req(metric, "measurements", where, ctx), f"{where}.measurements", ctx,
                   time=_unit_scale(unit, _TIME_TO_MS) is not None)
    return _XcMetric(label, unit, _opt_str(metric, "identifier", where, ctx), values)


def _xcresult_tests(doc: Any, ctx: _Ctx) -> Iterable[_XcTest]:
    for i, raw in enumerate(_list(doc, "the document", ctx)):
        where = f"test {i}"
        entry = _obj(raw, where, ctx)
        name = _str(_req(entry, "testIdentifier", where, ctx), f"{where}.testIdentifier", ctx)
        for j, run_raw in enumerate(_list(_req(entry, "testRuns", where, ctx), f"{where}.testRuns", ctx)):
            run = _obj(run_raw, f"{where}.testRuns[{j}]", ctx)
            metrics = _list(_req(run, "metrics", f"{where}.testRuns[{j}]", ctx), f"{where}.testRuns[{j}].metrics", ctx)
            if metrics:
                device, extra = _xcresult_device(run, f"{where}.testRuns[{j}]", ctx)
                test = name.rpartition("/")[2]
                yield _XcTest(test, [_xcresult_metric(m, f"{where}.testRuns[{j}].metrics[{k}]", ctx)
                                     for k, m in enumerate(metrics)], device=device, device_extra=extra,
                              display=name)


def _parse_xcresult(data: bytes, ctx: _Ctx) -> list[Record]:
    doc = _load_json(data, ctx)
    if isinstance(doc, dict):   # xcresulttool --test-id prints one test, not a list
        doc = [doc]
    records = _xc_records(XCRESULT, _xcresult_tests(doc, ctx), ctx)
    if not records:
        ctx.fail("no test with metrics found")
    return records


# --- 4. benchmark_model stdout -----------------------------------------------------------------------------------

#: TFLITE_LOG's "INFO: ", or a logcat line's "03-15 12:00:00.000  123  123 I tflite  : "
_LOG_PREFIX = re.compile(r"^\s*(?:\d\d-\d\d \d\d:\d\d:\d\d\.\d+\s+\d+\s+\d+\s+)?"
                         r"(?:(?P<level>INFO|WARN|WARNING|ERROR|VERBOSE|DEBUG|FATAL):\s?"
                         r"|(?P<short>[VDIWEF])\s+[\w.\-]+\s*:\s)?")
_TIMINGS = re.compile(r"Inference timings in us: Init: (?P<init>\S+), First inference: (?P<first>\S+), "
                      r"Warmup \(avg\): (?P<warmup>\S+), Inference \(avg\): (?P<avg>\S+)")
_STAT = re.compile(r"^(?:count=\S+|curr=\S+ count=\S+)(?: \w+=\S+)*$")
_PARAM = re.compile(r"^(?P<label>[A-Za-z#][^\[\]]*?): \[(?P<value>[^\]]*)\]$")
_FOOTPRINT = re.compile(r"^(?P<what>Memory footprint delta from the start of the tool|Peak memory footprint) "
                        r"\(MB\): init=(?P<init>\S+) overall=(?P<overall>\S+)$")
_PEAK = re.compile(r"^Overall peak memory footprint \(MB\) via periodic monitoring: (?P<mb>\S+)$")
_MODEL_SIZE = re.compile(r"^The input model file size \(MB\): (?P<mb>\S+)$")
_DELEGATES = (("use xnnpack", "xnnpack"), ("use gpu", "gpu"), ("use nnapi", "nnapi"), ("use hexagon", "hexagon"),
              ("use coreml", "coreml"), ("use npu", "npu"), ("use qnn", "qnn"))
_FAILURE_MARK = "Benchmarking failed."


@dataclass
class _LiteRun:
    started: bool = False
    timings: dict | None = None
    stats: list = field(default_factory=list)
    params: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    peak: float | None = None
    errors: list = field(default_factory=list)
    failed: bool = False
    xnnpack_default: bool = False


def _lite_stat(text: str, where: str, ctx: _Ctx) -> dict:
    stat = {}
    for token in text.replace("(all same)", "").split():
        key, _, value = token.partition("=")
        stat[key] = _text_num(value, f"{where} {key}", ctx, time=key != "count")
    return stat


def _lite_line(run: _LiteRun, payload: str, where: str, ctx: _Ctx) -> None:
    if (m := _TIMINGS.search(payload)) is not None:
        run.timings = {k: _text_num(v, f"{where} {k}", ctx, time=True) for k, v in m.groupdict().items()}
    elif _STAT.match(payload.replace("(all same)", "")):
        run.stats.append(_lite_stat(payload, where, ctx))
    elif (m := _FOOTPRINT.match(payload)) is not None:
        key = "memory_footprint_delta_mb" if m["what"].startswith("Memory") else "peak_memory_footprint_delta_mb"
        run.extra[key] = {k: _text_num(m[k], f"{where} {k}", ctx) for k in ("init", "overall")}
    elif (m := _PEAK.match(payload)) is not None:
        run.peak = _text_num(m["mb"], f"{where} peak memory", ctx, time=True)
    elif (m := _MODEL_SIZE.match(payload)) is not None:
        run.extra["model_size_mb"] = _text_num(m["mb"], f"{where} model size", ctx, time=True)
    elif (m := _PARAM.match(payload)) is not None:
        run.params[m["label"]] = m["value"]
    elif payload.startswith("Created TensorFlow Lite XNNPACK delegate"):
        run.xnnpack_default = True
    elif payload.startswith("Explicitly applied") or payload.startswith("Though "):
        run.extra["delegation"] = payload
    if _FAILURE_MARK in payload:
        run.failed = True


def _lite_runs(text: str, ctx: _Ctx) -> list[_LiteRun]:
    runs = [_LiteRun()]
    for n, line in enumerate(text.splitlines(), 1):
        if "STARTING!" in line:   # each run of the tool begins with it (benchmark_main.cc)
            if runs[-1].started:
                runs.append(_LiteRun())
            runs[-1].started = True
        run = runs[-1]
        prefix = _LOG_PREFIX.match(line)
        payload = line[prefix.end():].strip()
        if (prefix["level"] in ("ERROR", "FATAL") or prefix["short"] in ("E", "F")) and payload != _FAILURE_MARK:
            run.errors.append(payload)
        _lite_line(run, payload, f"line {n}", ctx)
    return runs


def _lite_setting(run: _LiteRun) -> str | None:
    flags = {label.lower(): value.strip() for label, value in run.params.items()}
    for label, setting in _DELEGATES:
        if flags.get(label) in ("1", "true"):
            return setting
    if flags.get("use xnnpack") in ("0", "false"):
        return "cpu"
    return "xnnpack" if run.xnnpack_default else None


def _lite_int_param(run: _LiteRun, label: str, ctx: _Ctx) -> int | None:
    value = run.params.get(label)
    if value is None:
        return None
    number = _text_num(value, f"parameter {label!r}", ctx)
    if not number.is_integer():
        ctx.fail(f"parameter {label!r} is {value!r}, not a whole number")
    return int(number) if number > 0 else None


def _lite_stats(run: _LiteRun) -> tuple[dict, dict, int | None]:
    regular = run.stats[-1] if run.stats else {}
    warmup = run.stats[-2] if len(run.stats) > 1 else {}
    count = regular.get("count")
    reported = {"count": None if count is None else int(count), "min": _ms(regular.get("min"), 1e-3),
                "max": _ms(regular.get("max"), 1e-3), "std": _ms(regular.get("std"), 1e-3),
                "median": _ms(regular.get("median"), 1e-3)}
    extra = {"p5_ms": _ms(regular.get("p5"), 1e-3), "p95_ms": _ms(regular.get("p95"), 1e-3),
             "first_timed_run_ms": _ms(regular.get("first"), 1e-3)}
    warmups = warmup.get("count")
    return _dropnone(reported), _dropnone(extra), None if warmups is None else int(warmups)


def _lite_record(run: _LiteRun, ctx: _Ctx) -> Record:
    graph = run.params.get("Graph")
    common = dict(source_tool=LITERT_STDOUT, meaning=IN_APP_WALL_TIME, model=_basename(graph) if graph else None,
                  target="tflite", runtime="tflite", setting=_lite_setting(run),
                  threads=_lite_int_param(run, "Num threads", ctx))
    params = {k: v for k, v in run.params.items() if k != "Graph"}
    if run.timings is None:
        error = run.errors[0] if run.errors else _FAILURE_MARK
        return Record(status=FAILED, error=_one_line(error, 500), extra=_dropnone({"params": params,
                      "errors": run.errors[1:20], "graph": graph}), **common)
    reported, stat_extra, warmup = _lite_stats(run)
    reported["mean"] = _scale(run.timings["avg"], 1e-3)
    extra = dict(run.extra, **stat_extra)
    extra.update(_dropnone({"warmup_avg_ms": _scale(run.timings["warmup"], 1e-3), "params": params,
                            "graph": graph}))
    if run.failed:   # an invoke failed in the timed runs: the timings are printed, then the failure
        common.update(status=FAILED, error=_one_line(run.errors[0] if run.errors else _FAILURE_MARK, 500))
    return Record(load_ms=_scale(run.timings["init"], 1e-3), first_inference_ms=_scale(run.timings["first"], 1e-3),
                  warmup=warmup, reported_ms=reported, peak_memory_mb=run.peak, extra=extra, **common)


def _parse_litert_stdout(data: bytes, ctx: _Ctx) -> list[Record]:
    records = []
    for i, run in enumerate(_lite_runs(_text(data, ctx), ctx), 1):
        if run.timings is None and not run.failed:
            ctx.fail(f"no 'Inference timings in us' line found in run {i} (truncated?)")
        records.append(_lite_record(run, ctx))
    return records


# --- 5. BenchmarkResult proto -------------------------------------------------------------------------------------

#: benchmark_result.proto (package tflite.tools.benchmark): message -> field number -> (name, wire type, kind)
_PROTO_PACKAGE = "tflite.tools.benchmark"
_PROTO_MESSAGES: dict[str, dict[int, tuple[str, str]]] = {
    "LatencyMetrics": {1: ("avg_ms", "float"), 2: ("min_ms", "float"), 3: ("max_ms", "float"),
                       4: ("stddev_ms", "float"), 5: ("median_ms", "float"), 6: ("p5_ms", "float"),
                       7: ("p95_ms", "float"), 8: ("init_ms", "float"), 9: ("first_inference_ms", "float"),
                       10: ("average_warm_up_ms", "float")},
    "MemoryMetrics": {1: ("init_footprint_kb", "int64"), 2: ("overall_footprint_kb", "int64"),
                      3: ("peak_mem_mb", "float")},
    "MiscMetrics": {1: ("model_size_mb", "float"), 2: ("num_runs", "int32"), 3: ("num_warmup_runs", "int32"),
                    4: ("model_throughput_in_mb_per_sec", "float")},
    "BenchmarkResult": {1: ("name", "string"), 2: ("latency_metrics", "LatencyMetrics"),
                        3: ("memory_metrics", "MemoryMetrics"), 4: ("misc_metrics", "MiscMetrics")},
}
_WIRE = {"float": 5, "int64": 0, "int32": 0, "string": 2}


def benchmark_result_class() -> type:
    """The ``tflite.tools.benchmark.BenchmarkResult`` message class, built at run time from a
    ``FileDescriptorProto`` that mirrors benchmark_result.proto (same field numbers and types). Needs
    ``google.protobuf``; raises ImportError without it."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    kinds = {"float": descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT,
             "int64": descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
             "int32": descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
             "string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING}
    proto = descriptor_pb2.FileDescriptorProto(name="shvit_edge/benchmark_result.proto", package=_PROTO_PACKAGE,
                                               syntax="proto2")
    for message, fields in _PROTO_MESSAGES.items():
        msg = proto.message_type.add(name=message)
        for number, (name, kind) in fields.items():
            f = msg.field.add(name=name, number=number, label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
            if kind in kinds:
                f.type = kinds[kind]
            else:
                f.type, f.type_name = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE, f".{_PROTO_PACKAGE}.{kind}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PROTO_PACKAGE}.BenchmarkResult"))


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("bad varint")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def _wire_fields(data: bytes, message: str) -> dict[str, Any]:
    """The fields of a serialized message of the schema above, checked strictly (known field numbers with their
    wire types only, exact lengths, UTF-8 strings): what detection trusts before claiming a binary file.
    Raises ValueError on anything else."""
    fields, pos, out = _PROTO_MESSAGES[message], 0, {}
    while pos < len(data):
        tag, pos = _varint(data, pos)
        name, kind = fields.get(tag >> 3, (None, None))
        if name is None or tag & 7 != _WIRE.get(kind, 2):
            raise ValueError(f"unexpected field {tag >> 3} (wire type {tag & 7})")
        if kind == "float":
            if pos + 4 > len(data):
                raise ValueError("truncated float")
            out[name], pos = struct.unpack_from("<f", data, pos)[0], pos + 4
        elif kind in ("int64", "int32"):
            out[name], pos = _varint(data, pos)
        else:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise ValueError("truncated field")
            chunk, pos = data[pos:pos + size], pos + size
            out[name] = chunk.decode("utf-8") if kind == "string" else _wire_fields(chunk, kind)
    return out


def _looks_like_benchmark_result(data: bytes) -> bool:
    if not data or len(data) > MAX_PROTO_BYTES:
        return False
    try:
        fields = _wire_fields(data, "BenchmarkResult")
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
    return "avg_ms" in fields.get("latency_metrics", {})


def _proto_value(msg: Any, name: str, where: str, ctx: _Ctx, *, time: bool = False) -> float | None:
    if not msg.HasField(name):
        return None
    value = float(getattr(msg, name))
    _finite(value, f"{where}.{name}", ctx, time=time)
    if isinstance(getattr(msg, name), float):   # a float32 as its shortest decimal: 12.345, not 12.3450002670
        for digits in range(6, 10):
            short = float(f"{value:.{digits}g}")
            if struct.unpack("<f", struct.pack("<f", short))[0] == value:
                return short
    return value


def _parse_litert_proto(data: bytes, ctx: _Ctx) -> list[Record]:
    try:
        cls = benchmark_result_class()
        from google.protobuf.message import DecodeError
    except ImportError:
        ctx.fail("reading it needs the protobuf package: pip install protobuf")
    msg = cls()
    try:
        msg.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        ctx.fail(f"not a BenchmarkResult proto ({exc})")
    lat, mem, misc = msg.latency_metrics, msg.memory_metrics, msg.misc_metrics
    t = {n: _proto_value(lat, n, "latency_metrics", ctx, time=True) for n, _ in
         _PROTO_MESSAGES["LatencyMetrics"].values()}
    memory = {n: _proto_value(mem, n, "memory_metrics", ctx, time=n == "peak_mem_mb")
              for n, _ in _PROTO_MESSAGES["MemoryMetrics"].values()}
    other = {n: _proto_value(misc, n, "misc_metrics", ctx) for n, _ in _PROTO_MESSAGES["MiscMetrics"].values()}
    if t["avg_ms"] is None:
        ctx.fail("latency_metrics has no avg_ms")
    for key in ("num_runs", "num_warmup_runs"):
        if other[key] is not None and other[key] < 0:
            ctx.fail(f"misc_metrics.{key} is {other[key]:g}, a negative count")
    kb = {k: _ms(memory[f"{k}_footprint_kb"], 1 / 1024) for k in ("init", "overall")}
    extra = _dropnone({"p5_ms": t["p5_ms"], "p95_ms": t["p95_ms"], "warmup_avg_ms": t["average_warm_up_ms"],
                       "memory_footprint_delta_mb": _dropnone(kb), "model_size_mb": other["model_size_mb"],
                       "throughput_mb_per_s": other["model_throughput_in_mb_per_sec"]})
    name = msg.name if msg.HasField("name") else None
    return [Record(source_tool=LITERT_PROTO, meaning=IN_APP_WALL_TIME, model=name or None, target="tflite",
                   runtime="litert", load_ms=t["init_ms"], first_inference_ms=t["first_inference_ms"],
                   warmup=None if other["num_warmup_runs"] is None else int(other["num_warmup_runs"]),
                   reported_ms=_dropnone({"mean": t["avg_ms"], "min": t["min_ms"], "max": t["max_ms"],
                                          "std": t["stddev_ms"], "median": t["median_ms"],
                                          "count": None if other["num_runs"] is None else int(other["num_runs"])}),
                   peak_memory_mb=memory["peak_mem_mb"], extra=extra)]


# --- 6. LiteRT Python benchmark --result_json --------------------------------------------------------------------

def _parse_litert_json(data: bytes, ctx: _Ctx) -> list[Record]:
    doc = _obj(_load_json(data, ctx), "the document", ctx)
    model = _str(_req(doc, "model", "the document", ctx), "model", ctx)
    lat = _obj(_req(doc, "latency", "the document", ctx), "latency", ctx)
    ms = {k: _opt_num(lat, k, "latency", ctx, time=True) for k in
          ("init_ms", "warmup_first_ms", "warmup_avg_ms", "avg_ms", "min_ms", "max_ms", "median_ms", "std_ms",
           "p5_ms", "p95_ms")}
    if ms["avg_ms"] is None:
        ctx.fail("latency has no 'avg_ms'")
    accelerators = [_str(a, f"accelerators[{i}]", ctx) for i, a in
                    enumerate(_list(doc.get("accelerators", []), "accelerators", ctx))]
    extra = _dropnone({"accelerators": accelerators, "signature": _opt_str(doc, "signature", "the document", ctx),
                       "fully_accelerated": _opt_bool(doc, "fully_accelerated", "the document", ctx),
                       "model_size_mb": _opt_num(doc, "model_size_mb", "the document", ctx, time=True),
                       "throughput_mb_per_s": _opt_num(doc, "throughput_mb_s", "the document", ctx, time=True),
                       "p5_ms": ms["p5_ms"], "p95_ms": ms["p95_ms"], "warmup_avg_ms": ms["warmup_avg_ms"],
                       "model_path": model})
    return [Record(source_tool=LITERT_JSON, meaning=IN_APP_WALL_TIME, model=_basename(model), target="tflite",
                   runtime="litert", setting=accelerators[0].lower() if accelerators else None,
                   threads=_positive(_opt_int(doc, "num_threads", "the document", ctx)),
                   load_ms=ms["init_ms"], first_inference_ms=ms["warmup_first_ms"],
                   warmup=_opt_int(lat, "num_warmup_runs", "latency", ctx, minimum=0),
                   reported_ms=_dropnone({"mean": ms["avg_ms"], "min": ms["min_ms"], "max": ms["max_ms"],
                                          "median": ms["median_ms"], "std": ms["std_ms"],
                                          "count": _opt_int(lat, "num_runs", "latency", ctx, minimum=0)}),
                   extra=extra)]


# --- 7. coremltools MLModelBenchmarker ----------------------------------------------------------------------------

_COREML_OS = {"mac": "macOS", "iphone": "iOS", "ipad": "iPadOS", "apppletv": "tvOS", "appletv": "tvOS",
              "applewatch": "watchOS", "homepod": "audioOS"}
_COREML_STATS = {"average": "mean", "minimum": "min", "maximum": "max", "std_dev": "std", "median": "median"}


def _coreml_measurement(raw: Any, where: str, ctx: _Ctx) -> tuple[list[float], dict]:
    if raw is None:
        return [], {}
    m = _obj(raw, where, ctx)
    samples = _nums(_req(m, "samples", where, ctx), f"{where}.samples", ctx, time=True)
    stats_raw = m.get("statistics")
    stats = {} if stats_raw is None else _obj(stats_raw, f"{where}.statistics", ctx)
    reported = {out: _opt_num(stats, key, f"{where}.statistics", ctx, time=True) for key, out in
                _COREML_STATS.items()}
    return samples, _dropnone(reported)


def _coreml_device(doc: dict, where: str, ctx: _Ctx) -> tuple[dict, dict]:
    raw = doc.get("device")
    if raw is None:   # MLModelBenchmarker(device=None) predicts in this process: on the Mac that ran it
        return {"manufacturer": "Apple", "os": "macOS"}, {}
    dev = _obj(raw, f"{where}.device", ctx)
    kind = _opt_str(dev, "type", f"{where}.device", ctx)
    device = _dropnone({"manufacturer": "Apple", "os": _COREML_OS.get((kind or "").lower()),
                        "os_version": _opt_str(dev, "os_version", f"{where}.device", ctx)})
    extra = _dropnone({"device_name": _opt_str(dev, "name", f"{where}.device", ctx), "device_type": kind,
                       "os_build": _opt_str(dev, "os_build_number", f"{where}.device", ctx)})
    return device, extra


def _coreml_record(raw: Any, where: str, ctx: _Ctx) -> Record:
    doc = _obj(raw, where, ctx)
    samples, reported = _coreml_measurement(doc.get("predict"), f"{where}.predict", ctx)
    loads, load_stats = _coreml_measurement(doc.get("load"), f"{where}.load", ctx)
    error = _opt_str(doc, "error", where, ctx)
    if not samples and not reported and not loads and error is None:
        ctx.fail(f"{where} has neither a measurement nor an error")
    units = _opt_str(doc, "compute_units", where, ctx)
    device, extra = _coreml_device(doc, where, ctx)
    warmup = _opt_bool(doc, "warmup", where, ctx)
    extra.update(_dropnone({"load_samples_ms": loads if len(loads) > 1 else None, "load_statistics_ms": load_stats,
                            "coremltools_version": _opt_str(doc, "coremltools_version", where, ctx),
                            "compute_units": units}))
    return Record(source_tool=COREML, meaning=IN_APP_WALL_TIME, status=FAILED if error else OK,
                  error=_one_line(error, 500) if error else None, model=_opt_str(doc, "model", where, ctx),
                  target="coreml", runtime="coreml", setting=units.lower() if units else None, device=device,
                  load_ms=_mean(loads) if loads else load_stats.get("mean"),
                  warmup=None if warmup is None else int(warmup), latencies_ms=tuple(samples),
                  reported_ms=reported, extra=extra)


def _parse_coreml(data: bytes, ctx: _Ctx) -> list[Record]:
    doc = _load_json(data, ctx)
    docs = _list(doc, "the document", ctx) if isinstance(doc, list) else [doc]
    if not docs:
        ctx.fail("the list of runs is empty")
    return [_coreml_record(d, f"run {i}" if isinstance(doc, list) else "the document", ctx)
            for i, d in enumerate(docs)]


# --- 8. Qualcomm AI Hub profile ------------------------------------------------------------------------------------

_QAI_RANGES = tuple(f"{step}_memory_{kind}_range" for step in ("compile", "first_load", "warm_load", "inference")
                    for kind in ("increase", "peak"))


def _qai_range_mb(summary: dict, key: str, ctx: _Ctx) -> list[float] | None:
    raw = summary.get(key)
    if raw is None:
        return None
    values = _nums(raw, f"execution_summary.{key}", ctx, time=True, scale=1 / MB)
    if len(values) != 2:
        ctx.fail(f"execution_summary.{key} has {len(values)} numbers, not 2")
    return values


def _qai_layers(doc: dict, ctx: _Ctx) -> tuple[dict, dict]:
    raw = doc.get("execution_detail")
    if raw is None:
        return {}, {}
    counts: dict[str, int] = {}
    times: dict[str, float] = {}
    for i, layer in enumerate(_list(raw, "execution_detail", ctx)):
        layer = _obj(layer, f"execution_detail[{i}]", ctx)
        unit = _opt_str(layer, "compute_unit", f"execution_detail[{i}]", ctx) or "?"
        counts[unit] = counts.get(unit, 0) + 1
        us = _opt_num(layer, "execution_time", f"execution_detail[{i}]", ctx, time=True)
        if us is not None:
            times[unit] = times.get(unit, 0.0) + us   # microseconds, made ms below
    return counts, {unit: _scale(us, 1e-3) for unit, us in times.items()}


def _parse_qai_hub(data: bytes, ctx: _Ctx) -> list[Record]:
    doc = _obj(_load_json(data, ctx), "the document", ctx)
    s = _obj(_req(doc, "execution_summary", "the document", ctx), "execution_summary", ctx)
    us = lambda key: _opt_num(s, key, "execution_summary", ctx, time=True)  # noqa: E731
    estimate = us("estimated_inference_time")
    times = [] if s.get("all_inference_times") is None else _nums(
        s["all_inference_times"], "execution_summary.all_inference_times", ctx, time=True, scale=1e-3)
    if estimate is None and not times:
        ctx.fail("execution_summary has neither estimated_inference_time nor all_inference_times")
    counts, unit_ms = _qai_layers(doc, ctx)
    order = sorted(counts, key=lambda u: (-counts[u], u))
    extra = {f"{key}_ms": _nums(s[key], f"execution_summary.{key}", ctx, time=True, scale=1e-3)
             for key in ("all_first_load_times", "all_warm_load_times", "all_compile_times") if s.get(key) is not None}
    extra.update({f"{key.removesuffix('_time')}_ms": _ms(us(key), 1e-3) for key in ("warm_load_time", "compile_time")})
    extra.update({f"{key}_mb": _ms(us(key), 1 / MB) for key in
                  ("first_load_peak_memory", "warm_load_peak_memory", "compile_peak_memory")})
    extra.update({f"{key}_mb": _qai_range_mb(s, key, ctx) for key in _QAI_RANGES})
    extra.update({"layers_per_compute_unit": counts, "layer_time_per_compute_unit_ms": unit_ms})
    peak = us("estimated_inference_peak_memory")
    return [Record(source_tool=QAI_HUB, meaning=HOSTED_ESTIMATE, setting="+".join(u.lower() for u in order) or None,
                   load_ms=_ms(us("first_load_time"), 1e-3), latencies_ms=tuple(times),
                   reported_ms=_dropnone({"min": _ms(estimate, 1e-3)}), peak_memory_mb=_ms(peak, 1 / MB),
                   extra=_dropnone(extra))]


# --- detection -------------------------------------------------------------------------------------------------

_XC_SIGNATURE = re.compile(r"Test [Cc]ase '-\[[^\]\s']+ [^\]\s']+\]'")
_LITE_SIGNATURES = ("Inference timings in us:", "Running benchmark for at least", "Min num runs: [",
                    "Log parameter values verbosely: [", "The input model file size (MB):")
#: what a truncated JSON file still shows: the keys that name its format
_JSON_SNIFF = ((ANDROID, ('"benchmarkModel"',)), (XCRESULT, ('"testIdentifier"',)),
               (QAI_HUB, ('"execution_summary"',)), (LITERT_JSON, ('"latency"', '"accelerators"')),
               (LITERT_JSON, ('"latency"', '"throughput_mb_s"')), (COREML, ('"compute_units"',)),
               (COREML, ('"samples"', '"statistics"')))


def _json_format(doc: Any) -> str | None:
    if isinstance(doc, dict):
        if "schema_version" in doc:
            return None
        if "execution_summary" in doc:
            return QAI_HUB
        if "testIdentifier" in doc and "testRuns" in doc:
            return XCRESULT
        if isinstance(doc.get("latency"), dict) and "model" in doc and ("accelerators" in doc or
                                                                         "throughput_mb_s" in doc):
            return LITERT_JSON
        return COREML if _is_coreml_run(doc) else None
    if isinstance(doc, list) and doc and isinstance(doc[0], dict):
        first = doc[0]
        if "benchmarkModel" in first and "metric" in first:
            return ANDROID
        if "testIdentifier" in first and "testRuns" in first:
            return XCRESULT
        return COREML if _is_coreml_run(first) else None
    return None


def _is_coreml_run(doc: dict) -> bool:
    runs = [doc.get("predict"), doc.get("load")]
    if any(isinstance(r, dict) and "samples" in r and "statistics" in r for r in runs):
        return True
    return "compute_units" in doc and any(key in doc for key in ("predict", "load", "error"))


def _sniff_json(text: str) -> str | None:
    if '"schema_version"' in text:
        return None
    for fmt, keys in _JSON_SNIFF:
        if all(k in text for k in keys):
            return fmt
    return None


def _detect_text(text: str) -> str | None:
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        try:
            return _json_format(json.loads(text, parse_constant=_refuse_constant))
        except (ValueError, RecursionError):
            found = _sniff_json(text)
            if found is not None:
                return found
    if _XC_SIGNATURE.search(text) and ("' measured [" in text or ": error: -[" in text or
                                       re.search(r"\]' (?:passed|failed)", text)):
        return IOS_XCTEST
    if any(s in text for s in _LITE_SIGNATURES) or ("STARTING!" in text and "Graph: [" in text):
        return LITERT_STDOUT
    return None


def _detect(data: bytes) -> str | None:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        return None
    data = bytes(data)
    if len(data) > MAX_FILE_BYTES:
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        found = _detect_text(text)
        if found is not None:
            return found
    return LITERT_PROTO if _looks_like_benchmark_result(data) else None


def detect(data: bytes, name: str) -> str | None:
    """The format of ``data`` (the file's bytes; ``name`` its file name, for messages only), or None when it is
    none of these. Returns None for shvit-edge's own documents (JSON objects with a top-level
    "schema_version" key) and for arbitrary other content. Never raises."""
    try:
        return _detect(data)
    except Exception:   # detection is a question: any failure to answer it is "none of these"
        return None


_PARSERS: dict[str, Callable[[bytes, _Ctx], list[Record]]] = {
    ANDROID: _parse_android, IOS_XCTEST: _parse_xctest, XCRESULT: _parse_xcresult,
    LITERT_STDOUT: _parse_litert_stdout, LITERT_PROTO: _parse_litert_proto, LITERT_JSON: _parse_litert_json,
    COREML: _parse_coreml, QAI_HUB: _parse_qai_hub}


def parse(data: bytes, name: str) -> list[Record]:
    """Every record in ``data``. Raises :class:`InputError` with a one-line message naming ``name`` and the
    format for anything malformed or truncated, or when :func:`detect` finds no format. Never any other
    exception, whatever the bytes."""
    fmt = detect(data, name)
    if fmt is None:
        raise InputError(f"{name}: not the output of a benchmark tool shvit-edge reads "
                         f"({', '.join(FORMATS)})")
    ctx = _Ctx(name, fmt)
    try:
        records = _PARSERS[fmt](bytes(data), ctx)
    except RecursionError:
        ctx.fail("nested too deeply")
    if not records:
        ctx.fail("no record found")
    if len(records) > MAX_RECORDS:
        ctx.fail(f"{len(records)} records (more than {MAX_RECORDS})")
    return [_check_finite(r, ctx) for r in records]
