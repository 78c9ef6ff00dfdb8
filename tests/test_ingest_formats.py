"""Tests of the readers of other benchmark tools' result files (:mod:`shvit_edge.harness.formats`).

Each format has a fixture in tests/fixtures/results/, written from the format's published definition (the code
that writes it, named above each format's tests): it is detected as exactly its format and reads to the numbers
asserted here, converted to ms and MB. Malformed and truncated files are refused with a one-line InputError
naming the file. The property tests feed every reader arbitrary bytes, mutations of its fixture and documents
shaped like its format with wrong types mixed in: the only exception allowed is InputError, and what is read is a
non-empty list of records whose numbers are all finite. Derandomized, without an example database: CI runs the
same cases every time.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import time_limit
from shvit_edge.errors import InputError
from shvit_edge.harness import formats
from shvit_edge.harness.formats import FORMATS, benchmark_result_class, detect, parse
from shvit_edge.harness.records import FAILED, HOSTED_ESTIMATE, IN_APP_WALL_TIME, OK, Record

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "results"
#: each format's fixture
FIXTURE = {
    "executorch-android-benchmark": "executorch_android_benchmark_results.json",
    "executorch-ios-xctest": "executorch_ios_xctest.log",
    "xcresulttool-metrics": "xcresulttool_metrics.json",
    "litert-benchmark-model": "litert_benchmark_model.log",
    "litert-benchmark-proto": "litert_benchmark_result.pb",
    "litert-benchmark-json": "litert_benchmark_litert_model.json",
    "coremltools-benchmarker": "coremltools_benchmarker.json",
    "qai-hub-profile": "qai_hub_profile.json",
}
JSON_FORMATS = ("executorch-android-benchmark", "xcresulttool-metrics", "litert-benchmark-json",
                "coremltools-benchmarker", "qai-hub-profile")
NAME = "results/run-7.out"
MIB = 1 << 20
CASE_SECONDS = 5

#: examples per format of each property test; PROPERTY_EXAMPLES is their total
EXAMPLES = {"arbitrary_bytes": 250, "fixture_mutations": 250, "shaped_documents": 250}
PROPERTY_EXAMPLES = len(FORMATS) * sum(EXAMPLES.values())


def fixture(fmt: str) -> bytes:
    return (FIXTURES / FIXTURE[fmt]).read_bytes()


def read(fmt: str, name: str | None = None) -> list[Record]:
    return parse(fixture(fmt), name or FIXTURE[fmt])


def refused(data: bytes, *needles: str, name: str = NAME) -> str:
    """The message parse() refuses ``data`` with: one line, naming the file, holding every needle."""
    with pytest.raises(InputError) as info:
        parse(data, name)
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    assert message.startswith(f"{name}: "), message
    for needle in needles:
        assert needle in message, message
    return message


def dumps(doc) -> bytes:
    return json.dumps(doc).encode()


def approx_list(values):
    return pytest.approx(list(values), rel=1e-12, abs=1e-12)


# --- every format --------------------------------------------------------------------------------------------

def test_formats_are_the_source_tools_records_name():
    assert FORMATS == tuple(FIXTURE)
    source = Path(formats.__file__).with_name("records.py").read_text()
    for fmt in FORMATS:
        assert f"``{fmt}``" in source, fmt


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_fixture_is_detected_as_exactly_its_format(fmt):
    assert detect(fixture(fmt), FIXTURE[fmt]) == fmt
    for other in FORMATS:
        if other != fmt:
            assert detect(fixture(other), FIXTURE[other]) != fmt, other
    records = read(fmt)
    assert records and all(isinstance(r, Record) and r.source_tool == fmt for r in records)


@pytest.mark.parametrize("doc", [{"schema_version": 1}, {"schema_version": 1, "records": []},
                                 {"schema_version": 2, "execution_summary": {"estimated_inference_time": 5}},
                                 {"schema_version": 1, "model": "x", "latency": {"avg_ms": 1}, "accelerators": []},
                                 {"schema_version": 1, "predict": {"samples": [1.0], "statistics": None}}])
def test_shvit_edge_documents_are_none_of_these(doc):
    data = json.dumps(doc, indent=2).encode()
    assert detect(data, "result.json") is None
    assert detect(data[:-3], "result.json") is None   # truncated too
    refused(data, "not the output of a benchmark tool")


@pytest.mark.parametrize("data", [b"", b"\n", b"hello world\n", b"{}", b"[]", b"null", b"[1, 2, 3]", b"\x00\xff" * 9,
                                  b'{"a": 1}', "Wettervorhersage für Montag\n".encode(), b"\x12\x02\x0d\x00"])
def test_other_content_is_none_of_these(data):
    assert detect(data, "x") is None
    refused(data, "not the output of a benchmark tool")


def test_detect_takes_anything():
    for value in (None, "text", 12, [b"x"], bytearray(b"[]"), memoryview(fixture("qai-hub-profile"))):
        detect(value, "x")   # must not raise
    assert detect(memoryview(fixture("qai-hub-profile")), "x") == "qai-hub-profile"
    with pytest.raises(InputError):
        parse("a text, not bytes", "x")


def test_long_lines_and_many_records_are_refused(monkeypatch):
    refused(b"INFO: STARTING!\nINFO: Graph: [" + b"x" * (formats.MAX_LINE_BYTES + 1) + b"]\n", "longer than 1 MB")
    entry = json.loads(fixture("executorch-android-benchmark"))[0]
    monkeypatch.setattr(formats, "MAX_RECORDS", 3)
    refused(dumps([entry] * 4), "executorch-android-benchmark", "more than 3")


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_files_are_refused_or_read_as_far_as_they_go(fmt):
    data = fixture(fmt)
    cuts = sorted({int(len(data) * f) for f in (0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95)} | {len(data.rstrip()) - 1})
    for cut in cuts:
        try:
            records = parse(data[:cut], NAME)
        except InputError as exc:
            assert str(exc).startswith(f"{NAME}: ") and len(str(exc).splitlines()) == 1
            continue
        assert fmt not in JSON_FORMATS, f"a JSON file cut at {cut} bytes was read"
        assert records and all(_all_finite(r) for r in records)


@pytest.mark.parametrize("fmt", JSON_FORMATS)
def test_a_truncated_json_file_names_its_format(fmt):
    data = fixture(fmt)
    refused(data[:len(data) // 2], fmt, "not valid JSON")


# --- 1. executorch-android-benchmark ----------------------------------------------------------------------------
# Defined by pytorch/executorch extension/benchmark/android/benchmark/app/src/main/java/org/pytorch/minibench/
# BenchmarkMetric.java/.kt (the entry: benchmarkModel, metric, actualValue, targetValue, deviceInfo), ModelRunner.kt
# and LlmBenchmark.kt (the metrics; Gson writes benchmark_results.json). The first spelling, actual/target with
# arch and device at the top level: pytorch/executorch PR 5332's example.

def test_android_benchmark_results():
    ok, failed, llm = read("executorch-android-benchmark")
    device = {"manufacturer": "samsung", "model": "SM-S926U1", "os": "Android", "os_version": "14"}
    assert (ok.meaning, ok.status, ok.error) == (IN_APP_WALL_TIME, OK, None)
    assert (ok.model, ok.target, ok.runtime, ok.setting, ok.precision, ok.quantization) == (
        "shvit_s1", "executorch", "executorch", "xnnpack", "fp32", None)
    assert ok.device == device
    assert ok.reported_ms == {"mean": 9.8561234}
    assert ok.load_ms == 27.418698 and ok.latencies_ms == ()
    assert ok.extra["trimmean_inference_latency_ms"] == 9.6312005
    assert ok.extra["ram_pss_delta_mb"] == 18.0
    assert ok.extra["benchmark_model"] == {"name": "shvit_s1", "backend": "xnnpack", "quantization": "fp32"}

    assert failed.status == FAILED and "load_status 34" in failed.error
    assert (failed.setting, failed.quantization, failed.load_ms, failed.reported_ms) == ("qnn", "q8", 412.775101, {})

    assert (llm.model, llm.setting, llm.quantization, llm.status) == ("stories110M", "xnnpack+custom", "q8", OK)
    assert llm.load_ms == 412.300115 and llm.reported_ms == {"mean": 31.204417}
    assert llm.extra["llm_model_load_time_ms"] == 433.18452
    assert llm.extra["generate_time_ms"] == 3375.450312
    assert llm.extra["token_per_sec"] == 37.41219
    assert llm.extra["load_status"] == [0, 0]


def test_android_first_spelling():
    data = (FIXTURES / "executorch_android_benchmark_results_v0.json").read_bytes()
    assert detect(data, "v0.json") == "executorch-android-benchmark"
    (record,) = parse(data, "v0.json")
    assert record.model == "shvit_s1_xnnpack_fp32" and record.setting is None
    assert record.device == {"manufacturer": "samsung", "model": "SM-S901U1", "os": "Android", "os_version": "12"}
    assert (record.load_ms, record.reported_ms, record.status) == (312.0, {"mean": 14.0}, OK)
    assert record.extra["spelling"] == "actual"


def _android(**changes):
    entry = json.loads(fixture("executorch-android-benchmark"))[0]
    entry.update(changes)
    return [entry]


@pytest.mark.parametrize("doc, needles", [
    (_android(actualValue="9.8"), ("actualValue", "a string, not a number")),
    (_android(actualValue=-1.5), ("negative",)),
    (_android(actualValue=True), ("a boolean, not a number",)),
    (_android(actualValue=10 ** 400), ("too large",)),
    (_android(metric=None), ("metric is null, not a string",)),
    (_android(benchmarkModel=["shvit_s1"]), ("benchmarkModel is a list, not an object",)),
    (_android(benchmarkModel={"backend": "xnnpack"}), ("has no 'name'",)),
    (_android(deviceInfo="samsung"), ("deviceInfo is a string",)),
    (_android(metric="load_status", actualValue=0.5), ("not a whole number",)),
    ([{**_android()[0], "actualValue": None}], ("actualValue", "null, not a number")),
    ([{k: v for k, v in _android()[0].items() if k != "actualValue"}], ("has no 'actualValue'",)),
    (_android()[0:1] + [[1, 2]], ("entry 1 is a list, not an object",)),
])
def test_android_malformed(doc, needles):
    refused(dumps(doc), "executorch-android-benchmark", *needles)


def test_android_nan_is_refused():
    text = fixture("executorch-android-benchmark").decode().replace('"actualValue":9.8561234', '"actualValue":NaN')
    refused(text.encode(), "executorch-android-benchmark", "NaN is not a JSON number")
    text = text.replace("NaN", "Infinity")
    refused(text.encode(), "Infinity is not a JSON number")


# --- 2. executorch-ios-xctest --------------------------------------------------------------------------------
# Defined by XCTest's measure output (XCTestLog: "Test Case '-[Class test]' measured [Name, unit] average: ...,
# relative standard deviation: ...%, values: [...], performanceMetricID:..."), the test names of pytorch/executorch
# extension/benchmark/apple/Benchmark/TestUtils/DynamicTestCase.m and ResourceTestCase.m, and the XCTClockMetric
# and XCTMemoryMetric measurements of Tests/GenericTests.mm.

IOS_FORWARD_S = [0.006264, 0.006402, 0.006269, 0.006253, 0.006143, 0.006272, 0.00651, 0.006386, 0.006497, 0.006355,
                 0.006381, 0.006343, 0.00601, 0.006464, 0.006401, 0.0064, 0.006006, 0.005996, 0.00615, 0.006226]
IOS_MEMORY_KB = [48921.616, 48921.616, 48954.384, 48921.616, 48938.0, 48938.0, 48921.616, 48954.384, 48921.616,
                 48954.384, 48938.0, 48954.384, 48954.384, 48921.616, 48921.616, 48954.384, 48954.384, 48954.384,
                 48921.616, 48938.0]
IOS_LOAD_S = [0.043783, 0.043014, 0.038646, 0.040107, 0.038737]


def test_ios_xctest_output():
    failed, ok = read("executorch-ios-xctest")
    device = {"manufacturer": "Apple", "model": "iPhone15,4", "os": "iOS", "os_version": "17.4.1"}
    assert (ok.model, ok.setting, ok.precision, ok.target, ok.device) == (
        "shvit_s1", "xnnpack", "fp32", "executorch", device)
    assert (ok.status, ok.meaning) == (OK, IN_APP_WALL_TIME)
    assert ok.latencies_ms == approx_list(s * 1000 for s in IOS_FORWARD_S)
    assert ok.latencies_ms[0] == 6.264   # no conversion residue
    assert ok.reported_ms == {}   # XCTest's printed average is rounded to 1 ms: the samples are kept instead
    assert ok.load_ms == pytest.approx(statistics.mean(IOS_LOAD_S) * 1000)
    assert ok.extra["load_samples_ms"] == approx_list(s * 1000 for s in IOS_LOAD_S)
    assert ok.peak_memory_mb == pytest.approx(max(IOS_MEMORY_KB) * 1000 / MIB)
    assert ok.extra["model_file"] == "shvit_s1_xnnpack_fp32.pte"

    assert (failed.status, failed.model, failed.setting, failed.precision) == (FAILED, "shvit_s1", "coreml", "fp16")
    assert 'failed: ("35") is not equal to ("0")' in failed.error
    assert failed.latencies_ms == () and failed.device == device


XC_LINE = ("Test Case '-[GenericTests test_forward_m_xnnpack_fp32_pte_macOS_15_1_0_arm64]' measured [{label}] "
           "average: 0.006, relative standard deviation: 1.000%, values: [{values}], "
           "performanceMetricID:com.apple.dt.XCTMetric_Clock.time.monotonic")


def test_xctest_other_tests_and_macs():
    line = XC_LINE.format(label="Clock Monotonic Time, s", values="0.006000, 0.007000")
    (record,) = parse(line.encode(), NAME)
    assert record.device == {"manufacturer": "Apple", "os": "macOS", "os_version": "15.1.0", "arch": "arm64"}
    assert record.latencies_ms == (6.0, 7.0)
    plain = ("Test Case '-[MyTests.Perf testDecode]' measured [Time, seconds] average: 0.013, relative standard "
             "deviation: 46.411%, values: [0.029607, 0.014741], performanceMetricID:"
             "com.apple.XCTPerformanceMetric_WallClockTime, baselineName: \"\", baselineAverage: ")
    (record,) = parse(plain.encode(), NAME)
    assert (record.model, record.target, record.latencies_ms) == ("testDecode", None, (29.607, 14.741))


def test_xctest_line_without_values_gives_its_average():
    (record,) = parse(XC_LINE.format(label="Clock Monotonic Time, S", values="").encode(), NAME)
    assert record.latencies_ms == () and record.reported_ms == {"mean": 6.0}


@pytest.mark.parametrize("text, needles", [
    (XC_LINE.format(label="Clock Monotonic Time, s", values="0.006, abc"), ("value 1", "not a number")),
    (XC_LINE.format(label="Clock Monotonic Time, s", values="-0.006"), ("negative",)),
    (XC_LINE.format(label="Clock Monotonic Time, kB", values="0.006"), ("not a unit of time",)),
    (XC_LINE.format(label="Clock Monotonic Time", values="0.006"), ("names no unit",)),
    (XC_LINE.format(label="Clock Monotonic Time, s", values="1e999"), ("not a finite number",)),
    (XC_LINE.format(label="Clock Monotonic Time, s", values="0.006, 0.0")[:-70], ("malformed",)),
    ("Test Case '-[GenericTests test_forward_m_xnnpack_fp32_pte_iOS_17_4_iPhone15_4]' started.\n"
     "Test Case '-[GenericTests test_forward_m_xnnpack_fp32_pte_iOS_17_4_iPhone15_4]' passed (1.2 seconds).\n",
     ("no XCTest 'measured [' line found",)),
])
def test_xctest_malformed(text, needles):
    refused(text.encode(), "executorch-ios-xctest", *needles)


# --- 3. xcresulttool-metrics ------------------------------------------------------------------------------------
# Defined by `xcrun xcresulttool get test-results metrics` (Xcode 16+; its schema: `xcrun xcresulttool help get
# test-results metrics`): a list of {testIdentifier, testIdentifierURL, testRuns: [{testPlanConfiguration, device:
# {deviceId, deviceName, architecture, modelName, platform, osVersion, osBuildNumber}, metrics: [{displayName,
# identifier, unitOfMeasurement, polarity, measurements}]}]}. Tests named by ExecuTorch's DynamicTestCase.m.

XC3_FORWARD_S = [0.005984, 0.006009, 0.005815, 0.006106, 0.005914, 0.005981, 0.006074, 0.005992, 0.005919, 0.005926,
                 0.006147, 0.005889, 0.006116, 0.005935, 0.005943, 0.00589, 0.005973, 0.005789, 0.006272, 0.005642]
XC3_LOAD_S = [0.041612, 0.040169, 0.040452, 0.042191, 0.040729]


def test_xcresulttool_metrics():
    (record,) = read("xcresulttool-metrics")   # the test without metrics is no record
    assert record.device == {"manufacturer": "Apple", "model": "iPhone 15 Pro", "os": "iOS", "os_version": "18.1",
                             "arch": "arm64e"}
    assert (record.model, record.setting, record.precision, record.status) == ("shvit_s1", "xnnpack", "fp32", OK)
    assert record.latencies_ms == approx_list(s * 1000 for s in XC3_FORWARD_S)
    assert record.load_ms == pytest.approx(statistics.mean(XC3_LOAD_S) * 1000)
    assert record.peak_memory_mb == pytest.approx(47728.64 * 1000 / MIB)
    assert record.extra["device_name"] == "Release iPhone" and record.extra["os_build"] == "22B83"


def _xcresult(**metric_changes):
    doc = json.loads(fixture("xcresulttool-metrics"))
    doc[0]["testRuns"][0]["metrics"][0].update(metric_changes)
    return doc


@pytest.mark.parametrize("doc, needles", [
    (_xcresult(measurements="0.006"), ("measurements is a string, not a list",)),
    (_xcresult(measurements=[0.006, "0.007"]), ("measurements[1] is a string, not a number",)),
    (_xcresult(measurements=[0.006, -0.007]), ("negative",)),
    (_xcresult(displayName="Memory Peak Physical", identifier=None, unitOfMeasurement="kB", measurements=[-1.0]),
     ("'Memory Peak Physical' has a negative value",)),
    (_xcresult(unitOfMeasurement=None), ("unitOfMeasurement is null",)),
    (_xcresult(unitOfMeasurement="furlongs"), ("not a unit of time",)),
    ([{"testIdentifier": "A/test_x()", "testRuns": {"metrics": []}}], ("testRuns is an object, not a list",)),
    ([{"testIdentifier": 7, "testRuns": []}], ("testIdentifier is a number, not a string",)),
    ([{"testIdentifier": "A/test_x()", "testRuns": [{"metrics": []}]}], ("no test with metrics found",)),
])
def test_xcresulttool_malformed(doc, needles):
    refused(dumps(doc), "xcresulttool-metrics", *needles)


# --- 4. litert-benchmark-model ---------------------------------------------------------------------------------
# Defined by tensorflow/lite/tools/benchmark/benchmark_model.cc (BenchmarkLoggingListener::OnBenchmarkEnd, Run,
# LogParams), benchmark_main.cc ("Benchmarking failed."), benchmark_tflite_model.cc ("Failed to apply ... delegate.")
# and the Stat/StatWithPercentiles lines of tensorflow/core/util/stats_calculator.h (google-ai-edge/LiteRT
# tflite/tools/benchmark/ carries them on: count first curr min max avg std, then p5 median p95).

def test_benchmark_model_output():
    ok, failed = read("litert-benchmark-model")
    assert (ok.model, ok.target, ok.runtime, ok.setting, ok.threads, ok.status) == (
        "shvit_s1_fp32.tflite", "tflite", "tflite", "xnnpack", 4, OK)
    assert ok.reported_ms == {"mean": 10.7814, "count": 100, "min": 10.512, "max": 12.201, "std": 0.271,
                              "median": 10.733}
    assert (ok.load_ms, ok.first_inference_ms, ok.warmup, ok.peak_memory_mb) == (48.212, 13.894, 46, 72.1797)
    assert ok.latencies_ms == ()   # benchmark_model prints no per-run times
    assert ok.extra["p5_ms"] == 10.541 and ok.extra["p95_ms"] == 11.203 and ok.extra["warmup_avg_ms"] == 10.9662
    assert ok.extra["memory_footprint_delta_mb"] == {"init": 53.9609, "overall": 61.4023}
    assert ok.extra["model_size_mb"] == 25.0537

    assert (failed.status, failed.setting, failed.model, failed.threads) == (
        FAILED, "gpu", "shvit_s1_fp32.tflite", 4)
    assert "TRANSPOSE" in failed.error and "Failed to apply GPU delegate." in failed.extra["errors"]
    assert failed.reported_ms == {} and failed.load_ms is None


def test_benchmark_model_older_output():
    text = ("STARTING!\nNum threads: [1]\nGraph: [/tmp/m.tflite]\nLoaded model /tmp/m.tflite\n"
            "Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 "
            "seconds.\ncount=1 curr=3512391\n\nRunning benchmark for at least 50 iterations\n"
            "count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 std=109798\n\n"
            "Inference timings in us: Init: 17187, First inference: 3512391, Warmup (avg): 3.51239e+06, "
            "Inference (avg): 2.95034e+06\nPeak memory footprint (MB): init=4.92969 overall=138.809\n")
    (record,) = parse(text.encode(), NAME)
    assert record.reported_ms == {"mean": 2950.34, "count": 50, "min": 2727.568, "max": 3189.954, "std": 109.798}
    assert (record.warmup, record.threads, record.load_ms, record.first_inference_ms) == (1, 1, 17.187, 3512.391)
    assert record.extra["peak_memory_footprint_delta_mb"] == {"init": 4.92969, "overall": 138.809}
    assert record.peak_memory_mb is None and record.setting is None


def test_benchmark_model_logcat_prefixes():
    text = fixture("litert-benchmark-model").decode().replace("INFO: ", "03-15 12:00:00.123  4321  4321 I tflite  : ")
    ok, failed = parse(text.replace("ERROR: ", "03-15 12:00:00.124  4321  4321 E tflite  : ").encode(), NAME)
    assert ok.reported_ms["mean"] == 10.7814 and failed.status == FAILED and "TRANSPOSE" in failed.error


def _lite(old: str, new: str) -> bytes:
    text = fixture("litert-benchmark-model").decode()
    assert old in text
    return text.replace(old, new, 1).encode()


@pytest.mark.parametrize("data, needles", [
    (_lite("Inference (avg): 10781.4", "Inference (avg): abc"), ("avg", "not a number")),
    (_lite("Inference (avg): 10781.4", "Inference (avg): -nan"), ("not a number",)),
    (_lite("Init: 48212", "Init: -48212"), ("negative",)),
    (_lite("avg=10781.4 std=271", "avg=10781.4 std=-271"), ("std", "negative")),
    (_lite("Num threads: [4]", "Num threads: [four]"), ("Num threads", "not a number")),
    (_lite("via periodic monitoring: 72.1797", "via periodic monitoring: 1e999"), ("not a finite number",)),
])
def test_benchmark_model_malformed(data, needles):
    refused(data, "litert-benchmark-model", *needles)


def test_benchmark_model_cut_before_its_timings_is_refused():
    text = fixture("litert-benchmark-model").decode()
    cut = text.index("INFO: Inference timings")
    refused(text[:cut].encode(), "litert-benchmark-model", "no 'Inference timings in us' line found in run 1")
    first_run = text[:text.index("$ adb", 10)]
    (record,) = parse(first_run.encode(), NAME)   # a whole run, the failed one cut off: read as far as it goes
    assert record.status == OK


# --- 5. litert-benchmark-proto -------------------------------------------------------------------------------------
# Defined by tensorflow/lite/tools/benchmark/proto/benchmark_result.proto (package tflite.tools.benchmark:
# BenchmarkResult{name=1, latency_metrics=2, memory_metrics=3, misc_metrics=4}), written by ProtoBenchmarkReporter in
# google-ai-edge/LiteRT tflite/tools/benchmark/benchmark_tflite_model.cc and by litert/tools/benchmark_litert_model.h
# (--result_file_path). The fixture is made by tests/fixtures/results/make_litert_proto.py.

def _proto(**fields) -> bytes:
    msg = benchmark_result_class()()
    msg.latency_metrics.avg_ms = 10.7814
    for path, value in fields.items():
        part, _, name = path.partition("__")
        setattr(getattr(msg, part), name, value)
    return msg.SerializeToString()


def test_benchmark_result_proto():
    (record,) = read("litert-benchmark-proto")
    assert (record.target, record.runtime, record.model, record.meaning) == ("tflite", "litert", None, IN_APP_WALL_TIME)
    assert record.reported_ms == {"mean": 10.7814, "min": 10.512, "max": 12.201, "std": 0.271, "median": 10.733,
                                  "count": 100}
    assert (record.load_ms, record.first_inference_ms, record.warmup, record.peak_memory_mb) == (
        48.212, 13.894, 46, 72.1797)
    assert record.extra["memory_footprint_delta_mb"] == {"init": 55256 / 1024, "overall": 62876 / 1024}
    assert record.extra["p5_ms"] == 10.541 and record.extra["throughput_mb_per_s"] == 55.8477


def test_benchmark_result_proto_is_the_published_message():
    """The fixture decodes with the published field numbers, not only with the reader's own descriptor."""
    data = fixture("litert-benchmark-proto")
    assert data[0] == (2 << 3 | 2)   # latency_metrics: field 2, length-delimited
    assert data[2] == (1 << 3 | 5)   # its avg_ms: field 1, fixed32
    msg = benchmark_result_class()()
    msg.ParseFromString(data)
    assert msg.SerializeToString() == data
    assert (msg.DESCRIPTOR.full_name, msg.misc_metrics.num_runs) == ("tflite.tools.benchmark.BenchmarkResult", 100)


@pytest.mark.parametrize("data, needles", [
    (_proto(latency_metrics__avg_ms=math.nan), ("avg_ms", "not a finite number")),
    (_proto(latency_metrics__min_ms=-1.0), ("min_ms", "negative")),
    (_proto(latency_metrics__init_ms=math.inf), ("init_ms", "not a finite number")),
    (_proto(misc_metrics__num_runs=-3), ("num_runs", "negative")),
])
def test_benchmark_result_proto_malformed(data, needles):
    assert detect(data, NAME) == "litert-benchmark-proto"
    refused(data, "litert-benchmark-proto", *needles)


def test_a_proto_without_its_fields_is_not_claimed():
    msg = benchmark_result_class()()
    msg.misc_metrics.num_runs = 100   # no latency_metrics.avg_ms
    assert detect(msg.SerializeToString(), NAME) is None
    assert detect(fixture("litert-benchmark-proto") + b"\x28\x01", NAME) is None   # an unknown field 5
    assert detect(fixture("litert-benchmark-proto")[:-2], NAME) is None


def test_reading_the_proto_without_protobuf_says_how_to_get_it(monkeypatch):
    def missing():
        raise ImportError("No module named 'google.protobuf'")

    monkeypatch.setattr(formats, "benchmark_result_class", missing)
    assert detect(fixture("litert-benchmark-proto"), NAME) == "litert-benchmark-proto"
    refused(fixture("litert-benchmark-proto"), "litert-benchmark-proto", "pip install protobuf")


# --- 6. litert-benchmark-json --------------------------------------------------------------------------------------
# Defined by google-ai-edge/LiteRT litert/python/tools/benchmark_litert_model.py (run_benchmark's results dict,
# json.dump(results, f, indent=2) for --result_json).

def test_litert_result_json():
    (record,) = read("litert-benchmark-json")
    assert (record.model, record.target, record.runtime, record.setting, record.threads) == (
        "shvit_s1_fp32.tflite", "tflite", "litert", "gpu", 4)
    assert record.reported_ms == {"mean": 4.82, "min": 4.51, "max": 6.94, "median": 4.77, "std": 0.31, "count": 50}
    assert (record.load_ms, record.first_inference_ms, record.warmup) == (612.48, 41.07, 5)
    assert record.extra["accelerators"] == ["GPU", "CPU"] and record.extra["fully_accelerated"] is True
    assert record.extra["p95_ms"] == 5.36 and record.extra["model_path"] == "/data/local/tmp/shvit_s1_fp32.tflite"


def _litert_json(**changes):
    doc = json.loads(fixture("litert-benchmark-json"))
    for key, value in changes.items():
        if key.startswith("latency__"):
            doc["latency"][key.removeprefix("latency__")] = value
        else:
            doc[key] = value
    return doc


@pytest.mark.parametrize("doc, needles", [
    (_litert_json(latency__avg_ms="4.82"), ("latency.avg_ms is a string, not a number",)),
    (_litert_json(latency__avg_ms=None), ("latency has no 'avg_ms'",)),
    (_litert_json(latency__min_ms=-4.5), ("negative",)),
    (_litert_json(latency__num_runs=12.5), ("num_runs", "not a whole number")),
    (_litert_json(accelerators="GPU"), ("accelerators is a string, not a list",)),
    (_litert_json(accelerators=["GPU", 7]), ("accelerators[1] is a number",)),
    (_litert_json(model=["m.tflite"]), ("model is a list, not a string",)),
    (_litert_json(fully_accelerated="yes"), ("fully_accelerated is a string, not a boolean",)),
])
def test_litert_result_json_malformed(doc, needles):
    refused(dumps(doc), "litert-benchmark-json", *needles)


# --- 7. coremltools-benchmarker ---------------------------------------------------------------------------------
# coremltools' MLModelBenchmarker (coremltools/models/ml_program/experimental/perf_utils.py: Measurement{statistics:
# Statistics{minimum, maximum, average, std_dev, median} | None, samples}) writes no file: the format is json.dumps of
# dataclasses.asdict of benchmark_load/benchmark_predict's results with the model, compute units and device around
# them (docs/ingest-formats.md); the fixture is made by tests/fixtures/results/make_coremltools_fixture.py.

COREML_PREDICT = [1.312041, 1.287958, 1.301125, 1.294583, 1.351666, 1.289041, 1.296208, 1.318333, 1.290791, 1.305875,
                  1.283583, 1.297041, 1.344083, 1.292125, 1.299416, 1.287333, 1.302791, 1.295958, 1.310208, 1.291666]


def test_coremltools_benchmarker():
    ok, failed = read("coremltools-benchmarker")
    assert (ok.model, ok.target, ok.runtime, ok.setting, ok.status, ok.warmup) == (
        "SHViT_S1_fp16.mlpackage", "coreml", "coreml", "cpu_and_ne", OK, 1)
    assert ok.latencies_ms == tuple(COREML_PREDICT)
    assert ok.reported_ms == {"mean": pytest.approx(statistics.mean(COREML_PREDICT)), "min": 1.283583,
                              "max": 1.351666, "std": pytest.approx(statistics.pstdev(COREML_PREDICT)),
                              "median": pytest.approx(statistics.median(COREML_PREDICT))}
    assert ok.load_ms == pytest.approx(statistics.mean([182.114583, 24.906375, 23.871208]))
    assert ok.device == {"manufacturer": "Apple", "os": "macOS"}
    assert (failed.status, failed.setting, failed.latencies_ms) == (FAILED, "cpu_and_gpu", ())
    assert "Unknown opset 'iOS18'" in failed.error


def test_coremltools_benchmarker_on_a_device():
    doc = json.loads(fixture("coremltools-benchmarker"))[0]
    doc["device"] = {"name": "Release iPhone", "type": "iphone", "os_version": "18.1", "os_build_number": "22B83"}
    (record,) = parse(dumps(doc), NAME)
    assert record.device == {"manufacturer": "Apple", "os": "iOS", "os_version": "18.1"}
    assert record.extra["device_name"] == "Release iPhone"


def _coreml(in_predict: dict | None = None, **changes):
    doc = json.loads(fixture("coremltools-benchmarker"))
    doc[0]["predict"].update(in_predict or {})
    doc[0].update(changes)
    return doc


@pytest.mark.parametrize("doc, needles", [
    (_coreml({"samples": [1.3, "1.2"]}), ("run 0.predict.samples[1] is a string, not a number",)),
    (_coreml({"samples": [1.3, -1.2]}), ("negative",)),
    (_coreml({"samples": "1.3"}), ("samples is a string, not a list",)),
    (_coreml({"statistics": {"average": "1.3"}}), ("statistics.average is a string",)),
    (_coreml(compute_units=3), ("compute_units is a number, not a string",)),
    (_coreml(warmup="yes"), ("warmup is a string, not a boolean",)),
    (_coreml(predict=None, load=None), ("neither a measurement nor an error",)),
    ([{"predict": [1.0], "load": {"samples": [], "statistics": None}}], ("predict is a list, not an object",)),
])
def test_coremltools_benchmarker_malformed(doc, needles):
    refused(dumps(doc), "coremltools-benchmarker", *needles)


# --- 8. qai-hub-profile -----------------------------------------------------------------------------------------
# Defined by the qai_hub client's ProfileJob.download_profile() (_profile_pb_to_python_dict, as its own test
# test_profile_pb_to_python_dict shows: execution_summary with times in us and memory in bytes, execution_detail per
# layer) and AI Hub's docs (docs/hub/howitworks.html: the inference time reported is the fastest observed).

QAI_US = [900, 901, 900, 904, 884, 883, 904, 902, 883, 878, 900, 891, 881, 877, 874, 897, 900, 882, 872, 905, 1187]


def test_qai_hub_profile():
    (record,) = read("qai-hub-profile")
    assert (record.meaning, record.status, record.setting) == (HOSTED_ESTIMATE, OK, "npu+cpu")
    assert record.latencies_ms == approx_list(us / 1000 for us in QAI_US)
    assert record.reported_ms == {"min": 0.872}
    assert record.peak_memory_mb == 6_426_624 / MIB
    assert record.load_ms == 1374.293 and record.extra["warm_load_ms"] == 143.82
    assert record.extra["layers_per_compute_unit"] == {"NPU": 6, "CPU": 1}
    assert record.extra["inference_memory_peak_range_mb"] == [12_288 / MIB, 6_426_624 / MIB]
    assert (record.model, record.target, record.device) == (None, None, {})


def _qai(**changes):
    doc = json.loads(fixture("qai-hub-profile"))
    doc["execution_summary"].update(changes)
    return doc


@pytest.mark.parametrize("doc, needles", [
    (_qai(all_inference_times=[900, "901"]), ("all_inference_times[1] is a string, not a number",)),
    (_qai(estimated_inference_time=-5), ("estimated_inference_time", "negative")),
    (_qai(estimated_inference_peak_memory="6 MB"), ("estimated_inference_peak_memory is a string",)),
    (_qai(inference_memory_peak_range=[1, 2, 3]), ("has 3 numbers, not 2",)),
    (_qai(estimated_inference_time=None, all_inference_times=None), ("neither",)),
    ({"execution_summary": [1, 2]}, ("execution_summary is a list, not an object",)),
    ({**_qai(), "execution_detail": [{"compute_unit": 3}]}, ("execution_detail[0].compute_unit is a number",)),
])
def test_qai_hub_profile_malformed(doc, needles):
    refused(dumps(doc), "qai-hub-profile", *needles)


# --- properties: whatever the bytes, InputError or finite records -------------------------------------------------

SETTINGS = dict(deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                                       HealthCheck.large_base_example])


def _all_finite(value) -> bool:
    if isinstance(value, Record):
        value = vars(value)
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_all_finite(v) for v in value)
    return True


def check(data: bytes) -> None:
    """detect() answers, and parse() either refuses cleanly or reads finite records of the detected format."""
    with time_limit(CASE_SECONDS):
        fmt = detect(data, NAME)
        assert fmt is None or fmt in FORMATS
        try:
            records = parse(data, NAME)
        except InputError as exc:
            message = str(exc)
            assert message.startswith(f"{NAME}: ") and len(message.splitlines()) == 1, message
            return
    assert isinstance(records, list) and records
    for record in records:
        assert isinstance(record, Record) and record.source_tool == fmt
        assert _all_finite(record), record
        assert record.status in (OK, FAILED) and (record.error is None) == (record.status == OK)
        json.dumps(record.extra, allow_nan=False)   # JSON-ready


#: the start of a file of each format, to steer arbitrary bytes into its reader
PREFIX = {
    "executorch-android-benchmark": b'[{"benchmarkModel": ',
    "executorch-ios-xctest": b"Test Case '-[GenericTests test_forward_m_xnnpack_fp32_pte_iOS_17_4_iPhone15_4]' "
                             b"measured [Clock Monotonic Time, s] average: ",
    "xcresulttool-metrics": b'[{"testIdentifier": ',
    "litert-benchmark-model": b"INFO: STARTING!\nINFO: Graph: [m.tflite]\nINFO: Inference timings in us: Init: ",
    "litert-benchmark-proto": b"\x12\x05\x0d",
    "litert-benchmark-json": b'{"model": "m.tflite", "accelerators": ["CPU"], "latency": ',
    "coremltools-benchmarker": b'[{"compute_units": ',
    "qai-hub-profile": b'{"execution_summary": ',
}


def arbitrary(fmt: str):
    prefix = PREFIX[fmt]
    return st.one_of(st.binary(max_size=300), st.builds(lambda tail: prefix + tail, st.binary(max_size=200)),
                     st.builds(lambda tail: prefix + tail.encode(), st.text(max_size=200)))


@st.composite
def mutations(draw, fmt: str) -> bytes:
    data = bytearray(fixture(fmt))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "copy"]))
        at = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[at:at] = draw(st.one_of(st.binary(min_size=1, max_size=8),
                                         st.sampled_from([b"-", b"e999", b"NaN", b"]", b"\n", b'"', b"0", b"\x00"])))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[at:]
        else:
            end = draw(st.integers(at, min(len(data), at + 64)))
            data[at:at] = data[at:end]
    return bytes(data)


# JSON documents shaped like a format: its fixture's tree with values replaced, removed or added

numbers = st.one_of(st.floats(min_value=0, max_value=1e4), st.integers(-5, 10 ** 6),
                    st.sampled_from([0, -1, -0.0, 1e308, 1e-320, 2 ** 63, 10 ** 400, math.nan, math.inf, -math.inf]),
                    st.floats())
strings = st.one_of(st.text(max_size=12), st.sampled_from(["s", "ms", "kB", "fp32", "xnnpack", "NPU", "load_status",
                                                           "avg_inference_latency(ms)", "Clock Monotonic Time",
                                                           "CPU_AND_NE", "GPU", "", "1e999", "NaN"]))
scalars = st.one_of(numbers, strings, st.booleans(), st.none())
wild = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(strings, inner, max_size=3)), max_leaves=6)


def _paths(doc, prefix=()):
    yield prefix
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        yield from _paths(value, (*prefix, key))


@st.composite
def shaped_json(draw, fmt: str) -> bytes:
    doc = copy.deepcopy(json.loads(fixture(fmt)))
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(list(_paths(doc))))
        if not path:
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        target = parent[path[-1]]
        op = draw(st.sampled_from(["same-kind", "same-kind", "wild", "delete", "add"]))
        if op == "same-kind":
            kind = numbers if isinstance(target, (int, float)) and not isinstance(target, bool) else (
                strings if isinstance(target, str) else wild)
            parent[path[-1]] = draw(kind)
        elif op == "wild":
            parent[path[-1]] = draw(wild)
        elif op == "delete":
            del parent[path[-1]]
        elif isinstance(target, dict):
            target[draw(strings)] = draw(wild)
        elif isinstance(target, list):
            target.append(draw(wild))
    return json.dumps(doc).encode()   # NaN and Infinity come out as JSON can't have them


NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"


@st.composite
def shaped_xctest(draw) -> bytes:
    lines = []
    for _ in range(draw(st.integers(1, 6))):
        test = draw(st.one_of(st.sampled_from(["test_forward_m_xnnpack_fp32_pte_iOS_17_4_iPhone15_4",
                                               "test_load_m_xnnpack_fp32_pte_iOS_17_4_iPhone15_4",
                                               "test_forward_m_pte_macOS_14_0_0_x86_64", "testPerf"]),
                              st.text(alphabet=NAME_CHARS, min_size=1, max_size=30)))
        head = f"Test Case '-[GenericTests {test}]'"
        kind = draw(st.sampled_from(["measured", "measured", "error", "end"]))
        if kind == "measured":
            label = draw(st.sampled_from(["Clock Monotonic Time, s", "Memory Peak Physical, kB", "CPU Time, s",
                                          "Time, seconds", "Clock Monotonic Time, ms per s", "Odd", "X, ", ", s"]))
            values = ", ".join(str(draw(numbers)) for _ in range(draw(st.integers(0, 5))))
            lines.append(f"{head} measured [{label}] average: {draw(numbers)}, relative standard deviation: "
                         f"{draw(numbers)}%, values: [{values}], performanceMetricID:{draw(strings)}")
        elif kind == "error":
            lines.append(f"/x.mm:1: error: -[GenericTests {test}] : {draw(st.text(max_size=30))}")
        else:
            lines.append(f"{head} {draw(st.sampled_from(['passed', 'failed', 'skipped']))} (0.1 seconds).")
    return "\n".join(lines).encode()


@st.composite
def shaped_benchmark_model(draw) -> bytes:
    token = st.one_of(st.floats(min_value=0, max_value=1e7).map(lambda v: f"{v:g}"), st.integers(0, 10 ** 6).map(str),
                      numbers.map(str), strings, st.sampled_from(["-nan", "nan", "2.95034e+06", "inf"]))
    lines = ["INFO: STARTING!"] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(1, 12))):
        template = draw(st.sampled_from([
            "INFO: STARTING!", "ERROR: Benchmarking failed.", "ERROR: Failed to apply GPU delegate.",
            "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
            "INFO: Graph: [{t}]", "INFO: Num threads: [{t}]", "INFO: Use gpu: [{t}]", "INFO: Use xnnpack: [{t}]",
            "INFO: count={t} first={t} curr={t} min={t} max={t} avg={t} std={t} p5={t} median={t} p95={t}",
            "INFO: Inference timings in us: Init: {t}, First inference: {t}, Warmup (avg): {t}, Inference (avg): {t}",
            "count={t} curr={t}(all same)", "curr={t} count={t}",
            "INFO: Inference timings in us: Init: {t}, First inference: {t}, Warmup (avg): {t}, Inference (avg): {t}",
            "INFO: Memory footprint delta from the start of the tool (MB): init={t} overall={t}",
            "INFO: Overall peak memory footprint (MB) via periodic monitoring: {t}",
            "INFO: The input model file size (MB): {t}"]))
        parts = template.split("{t}")
        lines.append(parts[0] + "".join(draw(token) + part for part in parts[1:]))
    return "\n".join(lines).encode()


@st.composite
def shaped_proto(draw) -> bytes:
    msg = benchmark_result_class()()
    floats = st.one_of(st.floats(width=32), st.floats(min_value=0, max_value=1e4, width=32))
    ints = st.integers(-(2 ** 31), 2 ** 31 - 1)
    for part, fields in (("latency_metrics", ("avg_ms", "min_ms", "max_ms", "stddev_ms", "median_ms", "p5_ms",
                                              "p95_ms", "init_ms", "first_inference_ms", "average_warm_up_ms")),
                         ("memory_metrics", ("init_footprint_kb", "overall_footprint_kb", "peak_mem_mb")),
                         ("misc_metrics", ("model_size_mb", "num_runs", "num_warmup_runs",
                                           "model_throughput_in_mb_per_sec"))):
        for name in fields:
            if draw(st.booleans()):
                is_int = name.endswith("_kb") or name.startswith("num_")
                setattr(getattr(msg, part), name, draw(ints if is_int else floats))
    if draw(st.booleans()):
        msg.name = draw(st.text(max_size=10))
    return msg.SerializeToString() + draw(st.sampled_from([b"", b"", b"\x28\x01", b"\x12"]))


SHAPED = {"executorch-ios-xctest": shaped_xctest(), "litert-benchmark-model": shaped_benchmark_model(),
          "litert-benchmark-proto": shaped_proto(), **{fmt: shaped_json(fmt) for fmt in JSON_FORMATS}}


def test_the_property_tests_run_at_least_6000_examples():
    assert set(SHAPED) == set(FORMATS) == set(FIXTURE)
    assert PROPERTY_EXAMPLES >= 6000


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=EXAMPLES["arbitrary_bytes"], **SETTINGS)
@given(data=st.data())
def test_arbitrary_bytes(fmt, data):
    check(data.draw(arbitrary(fmt)))


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=EXAMPLES["fixture_mutations"], **SETTINGS)
@given(data=st.data())
def test_fixture_mutations(fmt, data):
    check(data.draw(mutations(fmt)))


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=EXAMPLES["shaped_documents"], **SETTINGS)
@given(data=st.data())
def test_shaped_documents(fmt, data):
    check(data.draw(SHAPED[fmt]))
