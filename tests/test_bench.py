"""shvit-edge bench: one artifact of each target timed in its runtime beside PyTorch eager, a result document that
validates against the schema, threads that hold in every runtime, and a report that renders in a real browser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import copy_folder, child_pids, is_running
from shvit_edge.cli import cli

SCHEMA = Path(__file__).resolve().parent.parent / "shvit_edge" / "schemas" / "bench.schema.json"
FAST = ["--iterations", "6", "--rounds", "2", "--warmup", "1"]


@pytest.fixture(scope="module")
def artifacts(untrained_s1_64, tmp_path_factory):
    """S1 (untrained: latency does not depend on the weights) at 64x64 for every target: a private copy."""
    from shvit_edge.manifest import read_manifest

    folder = copy_folder(untrained_s1_64, tmp_path_factory.mktemp("bench"))
    paths = {}
    for manifest in folder.glob("*.json"):
        artifact = manifest.with_name(manifest.name[:-len(".json")])
        paths[read_manifest(manifest).target] = artifact
    return folder, paths


@pytest.fixture(scope="module")
def bench_doc(artifacts):
    folder, _ = artifacts
    result = CliRunner().invoke(cli, ["bench", str(folder), *FAST, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_bench_json_validates_against_the_schema(bench_doc, artifacts):
    import jsonschema

    jsonschema.validate(bench_doc, json.loads(SCHEMA.read_text()))
    _, paths = artifacts
    assert {r["target"]: r["artifact"] for r in bench_doc["results"]} == \
        {t: str(p) for t, p in paths.items() if t != "coreml"}
    (skipped,) = bench_doc["skipped"]  # Core ML runs only on Apple hardware: said, not silently dropped
    assert skipped["target"] == "coreml" and "macOS" in skipped["reason"]
    assert "coreml-sim" in skipped["reason"] and "no latency measurement" in skipped["reason"]
    assert bench_doc["failures"] == []


def test_bench_measures_what_it_says(bench_doc):
    from shvit_edge.models.build import create_model
    from shvit_edge.models.reparam import reparameterize
    from shvit_edge.models.registry import count_macs

    macs = count_macs(reparameterize(create_model("shvit_s1")), (64, 64))
    baseline = bench_doc["baseline"]
    assert baseline["target"] == "pytorch" and baseline["ratio_to_eager"] == 1.0
    assert bench_doc["machine"]["fp32_gemm_peak_gflops"] > 1
    for r in [baseline, *bench_doc["results"]]:
        lat = r["latency_ms"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"], r
        assert r["iterations"] == 6 and r["threads"] == 1 and r["batch"] == 1 and r["affinity"] == [r["affinity"][0]]
        assert r["macs_per_image"] == macs
        assert r["gflops"] == pytest.approx(2 * macs / (lat["p50"] / 1e3) / 1e9, rel=0.01)
        assert r["throughput_ips"] == pytest.approx(1e3 / lat["mean"], rel=0.01)
        assert r["ratio_to_eager"] == pytest.approx(lat["p50"] / baseline["latency_ms"]["p50"], rel=0.01)
        assert r["peak_rss_mb"] > 20 and r["load_ms"] > 0 and r["first_inference_ms"] > 0
        assert r["cpu_utilization"] <= 1.05, r  # pinned to one CPU, whatever the runtime's pool would do
    runtimes = {r["target"]: r["runtime"] for r in bench_doc["results"]}
    assert runtimes["executorch"].startswith("executorch.runtime") and runtimes["onnx"].startswith("onnxruntime")
    assert runtimes["tflite"].startswith("ai-edge-litert")


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_threads_hold_in_every_runtime(artifacts):
    """One thread is one CPU for every runtime (ExecuTorch's XNNPACK pool ignores torch's setting and, unpinned,
    used both cores); two threads really use two where the machine has them."""
    _, paths = artifacts
    docs = {}
    for threads in (1, 2):
        result = CliRunner().invoke(cli, ["bench", str(paths["executorch"]), "--threads", str(threads),
                                          "--iterations", "40", "--rounds", "2", "--warmup", "2", "--json"])
        assert result.exit_code == 0, result.output
        docs[threads] = json.loads(result.stdout)
    for threads, doc in docs.items():
        assert doc["machine"]["threads"] == threads
        for r in [doc["baseline"], *doc["results"]]:
            assert len(r["affinity"]) == threads and r["threads"] == threads
    one, two = docs[1]["baseline"], docs[2]["baseline"]
    assert one["cpu_utilization"] <= 1.05 and docs[1]["results"][0]["cpu_utilization"] <= 1.05
    assert two["cpu_utilization"] > one["cpu_utilization"] + 0.1, (one, two)


def test_report_renders_in_a_headless_browser(bench_doc, tmp_path):
    """The page, as chromium draws it: the table is there and the plots are pictures, not broken images."""
    import numpy as np
    from PIL import Image

    from shvit_edge.bench.report import colours, write_report

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed: the README's test command installs it (apt-get install chromium)")
    written = write_report(bench_doc, tmp_path / "report")
    assert {p.name for p in written} == {"report.md", "report.html", "latency.png", "roofline.png"}
    page = tmp_path / "report" / "report.html"
    shot = tmp_path / "shot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,2400"]
    subprocess.run([chromium, *flags, f"--screenshot={shot}", page.as_uri()], check=True, timeout=120,
                   capture_output=True)
    dom = subprocess.run([chromium, *flags, "--dump-dom", page.as_uri()], check=True, timeout=120,
                         capture_output=True, text=True).stdout
    assert dom.count("<tr>") == 1 + 1 + len(bench_doc["results"])  # header, baseline, one per artifact
    assert dom.count('<img id="plot-') == 2
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)

    def count(hex_colour: str) -> int:
        rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(pixels.astype(int) - rgb).sum(axis=1) <= 6).sum())

    assert count("#f0f0f0") > 5000, "the table's header row is not on the page"
    for target in ("pytorch", "executorch", "tflite", "onnx"):  # bars of each backend's colour, in both plots
        assert count(colours()[target]) > 3000, f"no {target} bars drawn"


@pytest.mark.parametrize("args,message", [
    (["--threads", "0"], "Invalid value for '--threads': must be from 1"),
    (["--threads", "999"], "--threads must be between 1 and"),
    (["--iterations", "5", "--seconds", "1"], "not both"),
    (["--iterations", "0"], "Invalid value for '--iterations': must be from 1"),
    (["--seconds", "0"], "Invalid value for '--seconds': must be above 0"),
])
def test_bad_bench_arguments_are_usage_errors(artifacts, args, message):
    _, paths = artifacts
    result = CliRunner().invoke(cli, ["bench", str(paths["onnx"]), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_bench_of_what_is_not_an_artifact_is_an_input_error(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"not an artifact")
    for path in (tmp_path / "x.onnx", tmp_path / "missing.pte"):
        result = CliRunner().invoke(cli, ["bench", str(path)])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output


def test_only_a_core_ml_package_here_is_a_usage_error_naming_why(artifacts):
    _, paths = artifacts
    result = CliRunner().invoke(cli, ["bench", str(paths["coreml"])])
    assert result.exit_code == 2, result.output
    assert "nothing to benchmark here" in result.output and "macOS" in result.output


def test_a_runtime_that_fails_is_reported_by_name_with_exit_1(artifacts, tmp_path):
    """A damaged artifact (its manifest intact) fails in its worker; the others are still measured."""
    _, paths = artifacts
    for target in ("onnx", "tflite"):
        shutil.copy(paths[target], tmp_path / paths[target].name)
        shutil.copy(Path(f"{paths[target]}.json"), tmp_path / f"{paths[target].name}.json")
    (tmp_path / paths["onnx"].name).write_bytes(b"garbage")
    result = CliRunner().invoke(cli, ["bench", str(tmp_path), *FAST, "--json"])
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    (failure,) = doc["failures"]
    assert failure["target"] == "onnx" and failure["error"]
    assert [r["target"] for r in doc["results"]] == ["tflite"]
    assert f"FAILED {tmp_path / paths['onnx'].name}" in result.stderr


def test_without_a_baseline_there_is_no_ratio(artifacts):
    _, paths = artifacts
    result = CliRunner().invoke(cli, ["bench", str(paths["onnx"]), *FAST, "--no-baseline", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["baseline"] is None and doc["baselines"] == []
    (row,) = doc["results"]
    assert row["ratio_to_eager"] is None and doc["machine"]["fp32_gemm_peak_gflops"] is None


def test_a_non_resident_run_loads_each_worker_once_a_round_and_times_the_same(artifacts):
    """``resident=False`` (benchmarks/compare.py): each worker is started and stopped within each round, so at
    most one is alive at a time; every candidate still gets exactly the iterations asked, and its ratio."""
    from shvit_edge.bench import BenchOptions, bench

    _, paths = artifacts
    loads = []
    report = bench([paths["onnx"], paths["tflite"]], BenchOptions(iterations=5, rounds=2, warmup=1, resident=False),
                   progress=lambda what, done, total: loads.append(what))
    doc = report.as_json()
    assert doc["failures"] == []
    assert sorted(r["target"] for r in doc["results"]) == ["onnx", "tflite"]
    for row in [*doc["results"], *doc["baselines"]]:
        assert row["iterations"] == 5 and row["peak_rss_mb"] > 0 and row["load_ms"] > 0
    assert all(r["ratio_to_eager"] > 0 for r in doc["results"])
    assert doc["machine"]["fp32_gemm_peak_gflops"] > 0
    assert sum(what.startswith("round ") for what in loads) == 2 * 3  # 3 candidates, 2 rounds
    assert not any(what.startswith("loading") for what in loads)


@pytest.mark.parametrize("iterations,rounds", [(7, 2), (3, 5), (50, 5)])
def test_iterations_add_up_to_what_was_asked(iterations, rounds):
    from shvit_edge.bench import BenchOptions

    options = BenchOptions(iterations=iterations, rounds=rounds)
    requests = [options.round_request(r) for r in range(rounds)]
    assert sum(r["run"] for r in requests if r) == iterations
    assert all(r is None or r["run"] >= 1 for r in requests)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_sigterm_mid_run_stops_every_worker_and_prints_nothing(artifacts):
    """A long bench ended by SIGTERM ends by that signal (a shell shows 143), prints no half document, and
    leaves no worker running."""
    import signal
    import sys
    import time

    _, paths = artifacts
    proc = subprocess.Popen([sys.executable, "-m", "shvit_edge.cli", "bench", str(paths["onnx"]), "--seconds", "300",
                             "--rounds", "1", "--warmup", "0", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    workers: list[int] = []
    deadline = time.monotonic() + 120
    while len(workers) < 2 and time.monotonic() < deadline:  # the artifact's and the eager baseline's
        time.sleep(0.5)
        workers = [pid for pid in child_pids(proc.pid) if is_running(pid)]
    assert len(workers) == 2, "the two workers did not start"
    time.sleep(5)  # both loaded; the timed run is under way
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM, err
    assert out == "" and "Traceback" not in err
    assert not [pid for pid in workers if is_running(pid)]
