"""``results report`` (shvit_edge.harness.report): a real results store filled through ingest with synthetic
result documents (an iPhone, a Pixel, the host with an interpreter run, a hosted estimate), parity set in SQL,
and the report read back: the files, the table's numbers, the escaping, and the page as chromium draws it."""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from shvit_edge.errors import UsageError
from shvit_edge.harness import report
from shvit_edge.harness.ingest import read_document, store_items
from shvit_edge.harness.store import open_store

BUNDLE_ID = hashlib.sha256(b"bundle").hexdigest()
XSS = '<script>alert("x$y")</script>'
IPHONE = {"model": "iPhone13,2", "manufacturer": "Apple", "os": "iOS", "os_version": "17.4",
          "soc": "Apple A14 Bionic"}
PIXEL = {"model": "Pixel 8", "manufacturer": "Google", "os": "Android", "os_version": "14", "soc": "Tensor G3"}
HOST = {"model": "build-box", "os": "Linux", "os_version": "6.8", "soc": "AMD EPYC 7B13"}
FAILED_ERROR = "MLModel compile failed: op <gelu_tanh> & friends unsupported on cpu_and_gpu"
SKIPPED_ERROR = "NNAPI is not available on Android 15 devices"
PASS_METRICS = {"cosine": 0.99998, "sqnr_db": 41.25, "max_abs": 0.004, "top1_agreement": 1.0}
FAIL_METRICS = {"cosine": 0.995, "sqnr_db": 18.0, "max_abs": 0.31, "top1_agreement": 0.8}
TOLERANCE = {"class": "fp16", "cosine": 0.999, "max_abs": 0.05, "top1_agreement": 0.9, "sqnr_db": 30.0}
FAIL_REASON = "cosine 0.995000 < 0.999; SQNR 18.0 dB < 30.0 dB"


def output(rng: np.random.Generator) -> dict:
    values = rng.standard_normal((2, 10)).astype("<f4")
    return {"shape": [2, 10], "dtype": "float32", "base64": base64.b64encode(values.tobytes()).decode("ascii")}


def run(artifact: str, runtime: str, setting: str, rng: np.random.Generator, status: str = "ok", **more) -> dict:
    entry = {"artifact": artifact, "artifact_sha256": hashlib.sha256(artifact.encode()).hexdigest(),
             "runtime": runtime, "setting": setting, "status": status, **more}
    if status == "ok":
        centre = rng.uniform(1.5, 12.0)
        entry.update(latencies_ms=[round(float(v), 4) for v in centre * rng.lognormal(0.0, 0.08, 41)],
                     load_ms=float(rng.uniform(50, 400)), first_inference_ms=float(rng.uniform(5, 40)),
                     peak_memory_mb=float(rng.uniform(30, 90)), thermal_before="nominal", thermal_after="fair",
                     threads=2, warmup=5, output=output(rng))
    return entry


def result_doc(device: dict, harness: str, runs: list[dict]) -> dict:
    """A valid result document (result.schema.json, schema_version 2)."""
    return {"schema_version": 2, "kind": "shvit-edge-result", "bundle": {"id": BUNDLE_ID, "name": "bundle"},
            "harness": {"name": harness, "version": "1.0"}, "device": device,
            "created_at": "2025-01-01T00:00:00+00:00", "runs": runs}


def documents(seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        result_doc(IPHONE, "shvit-edge-ios", [
            run("shvit_s1_fp16.mlpackage", "Core ML", "cpu_only", rng),
            run("shvit_s1_fp16.mlpackage", "Core ML", "cpu_and_ne", rng),
            run("shvit_s1_fp16.mlpackage", "Core ML", "cpu_and_gpu", rng, status="failed", error=FAILED_ERROR)]),
        result_doc(PIXEL, "shvit-edge-android", [
            run("shvit_s1_fp16.tflite", "LiteRT", "xnnpack", rng),
            run("shvit_s1_fp16.tflite", "LiteRT", "gpu", rng),
            run(XSS, "LiteRT", "xnnpack", rng),
            run("shvit_s1_fp16.tflite", "LiteRT", "nnapi", rng, status="skipped", error=SKIPPED_ERROR)]),
        result_doc(HOST, "shvit-edge-host", [
            run("shvit_s1.onnx", "ONNX", "default", rng, meaning="host wall time"),
            run("shvit_s1_fp16.mlpackage", "Core ML", "coreml-sim", rng, meaning="interpreter, not a latency")]),
    ]


QAI_PROFILE = {"execution_summary": {"estimated_inference_time": 2100, "all_inference_times": [2000, 2100, 2300],
                                     "first_load_time": 150000, "estimated_inference_peak_memory": 30000000}}


def fill(store, docs: list[dict], extra: list[tuple[bytes, str]] = ()) -> None:
    items = [read_document(json.dumps(d).encode(), f"doc{i}.json", base=None) for i, d in enumerate(docs)]
    items += [read_document(data, origin, base=None) for data, origin in extra]
    store_items(store, items)


def set_parity(store, run_id: int, status: str, metrics: dict, reason: str) -> None:
    with store.transaction() as db:
        db.execute("UPDATE runs SET parity_status = ?, parity_metrics = ?, tolerance = ?, parity_reason = ?, "
                   "tied = 1, variant = 'shvit_s1', precision = 'fp16' WHERE id = ?",
                   (status, json.dumps(metrics), json.dumps(TOLERANCE), reason, run_id))


class Tables(HTMLParser):
    """Every ``<tr id=...>``'s cell texts, by id."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.rows: dict[str, list[str]] = {}
        self.row: str | None = None
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr" and dict(attrs).get("id"):
            self.row = dict(attrs)["id"]
            self.rows[self.row] = []
        elif tag == "td" and self.row is not None:
            self.cell = []

    def handle_endtag(self, tag):
        if tag == "td" and self.cell is not None and self.row is not None:
            self.rows[self.row].append("".join(self.cell))
            self.cell = None
        elif tag == "tr":
            self.row = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def parse_tables(page: str) -> dict[str, list[str]]:
    parser = Tables()
    parser.feed(page)
    return parser.rows


@pytest.fixture(scope="module")
def store_rows(tmp_path_factory):
    """(rows of the store, the ingested documents): parity set to pass on two runs and fail on one."""
    store = open_store(tmp_path_factory.mktemp("store") / "r.sqlite")
    docs = documents()
    fill(store, docs, [(json.dumps(QAI_PROFILE).encode(), "qai.json")])
    by_key = {(r["device_model"], r["setting"]): r["id"] for r in store.runs() if r["model"] != XSS}
    set_parity(store, by_key[("iPhone13,2", "cpu_only")], "pass", PASS_METRICS, "within tolerance on 2 inputs")
    set_parity(store, by_key[("iPhone13,2", "cpu_and_ne")], "pass", dict(PASS_METRICS, cosine=0.9996), "ok")
    set_parity(store, by_key[("Pixel 8", "gpu")], "fail", FAIL_METRICS, FAIL_REASON)
    rows = store.runs()
    store.close()
    return rows, docs


@pytest.fixture(scope="module")
def written(store_rows, tmp_path_factory):
    rows, _ = store_rows
    out = tmp_path_factory.mktemp("report") / "out"
    paths = report.write_results_report(rows, out)
    return out, paths


def test_the_report_files_and_nothing_else(written):
    from PIL import Image

    out, paths = written
    assert [p.name for p in paths] == list(report.FILES)
    assert sorted(p.name for p in out.iterdir()) == sorted(report.FILES)  # no temporary left behind
    for name in report.FILES[2:]:
        data = (out / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 200
    md = (out / "results.md").read_text(encoding="utf-8")
    assert "![latency_by_device.png](latency_by_device.png)" in md and "parity_by_device.png" in md
    assert "<script>" not in md and "\\<script\\>" in md


def test_the_table_says_what_each_run_is(written, store_rows):
    out, _ = written
    rows, docs = store_rows
    page = (out / "results.html").read_text(encoding="utf-8")
    for device in (IPHONE, PIXEL, HOST):
        assert html.escape(report.device_label({f"device_{k}": v for k, v in device.items()})) in page
        assert device["model"] in page and device["soc"] in page
    for setting in ("cpu_only", "cpu_and_ne", "cpu_and_gpu", "xnnpack", "gpu", "nnapi", "default", "coreml-sim"):
        assert setting in page, setting
    assert html.escape(FAILED_ERROR) in page and html.escape(SKIPPED_ERROR) in page
    assert html.escape(XSS) in page and "<script" not in page.lower()  # the data is text, never markup
    table = parse_tables(page)
    ok = [r for r in rows if r["status"] == "ok"]
    assert sorted(table) == sorted([f"run-{r['id']}" for r in ok] +
                                   [f"problem-{r['id']}" for r in rows if r["status"] != "ok"])
    column = {name: i for i, name in enumerate(report.HEAD)}
    generated = {(d["device"]["model"], r["artifact"], r["setting"]): r["latencies_ms"]
                 for d in docs for r in d["runs"] if r["status"] == "ok"}
    for r in ok:
        cells = table[f"run-{r['id']}"]
        assert len(cells) == len(report.HEAD)
        if r["source_tool"] == "qai-hub-profile":
            assert "HOSTED ESTIMATE" in cells[column["source (what its numbers are)"]]
            assert cells[column["p50 ms"]] == f"{np.median([2.0, 2.1, 2.3]):.2f}"
            assert cells[column["tie"]] == report.NO_SHA
            continue
        latencies = generated[(r["device_model"], r["model"], r["setting"])]
        assert cells[column["p50 ms"]] == f"{np.median(latencies):.2f}"
        assert cells[column["p90 ms"]] == f"{np.percentile(latencies, 90):.2f}"
        assert cells[column["stats"]] == f"raw, n={len(latencies)}"
        assert cells[column["thermal"]] == "nominal -> fair"
        assert r["device_model"] in cells[column["device"]] and r["setting"] in cells[column["runtime / setting"]]
        if r["setting"] == "coreml-sim":
            assert "INTERPRETER, NOT A LATENCY" in cells[column["source (what its numbers are)"]]
        parity = cells[column["parity"]]
        if r["parity_status"] == "fail":
            assert parity.startswith("fail: cos 0.995000 (>= 0.999), SQNR 18.0 dB (>= 30.0 dB)")
            assert FAIL_REASON in parity
        elif r["parity_status"] == "pass":
            assert parity.startswith("pass: cos 0.99") and "SQNR 41.2 dB (>= 30.0 dB)" in parity
            assert cells[column["tie"]] == "tied"
        else:
            assert parity.startswith("unjudged") and cells[column["tie"]] == report.NO_BUNDLE
    problems = {r["status"]: table[f"problem-{r['id']}"] for r in rows if r["status"] != "ok"}
    assert problems["failed"][-1] == FAILED_ERROR and problems["skipped"][-1] == SKIPPED_ERROR
    assert "interpreter run(s) (numerics only, not a latency) are left out of this plot" in page


def test_summary_rows_are_json_ready(store_rows):
    rows, _ = store_rows
    summary = report.summary_rows(rows)
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary
    assert [s["id"] for s in summary] == [r["id"] for r in rows]
    for s, r in zip(summary, rows, strict=True):
        assert set(s) >= {"id", "device", "runtime", "setting", "model", "p50", "p90", "cv", "parity", "tied"}
        assert s["p50"] == r["p50"] and s["parity"] == r["parity_status"] and s["tied"] is bool(r["tied"])
    (xss,) = [s for s in summary if s["model"] == XSS]
    assert xss["device"] == "Pixel 8 · Tensor G3 · Android 14" and xss["setting"] == "xnnpack"


def test_the_page_renders_in_a_headless_browser(written, tmp_path):
    """The page as chromium draws it: not blank, the table there, and every plot a picture that decodes."""
    from PIL import Image

    from shvit_edge.bench.report import colours

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed: the README's test command installs it (apt-get install chromium)")
    out, _ = written
    page = out / "results.html"
    shot = tmp_path / "shot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,2000"]
    # one launch draws the screenshot and prints the DOM (a chromium that does only one gets a second launch)
    dom = subprocess.run([chromium, *flags, f"--screenshot={shot}", "--dump-dom", page.as_uri()], check=True,
                         timeout=120, capture_output=True, text=True).stdout
    if not shot.is_file():
        subprocess.run([chromium, *flags, f"--screenshot={shot}", page.as_uri()], check=True, timeout=120,
                       capture_output=True)
    assert shot.is_file() and "</html>" in dom, "chromium drew no screenshot or printed no DOM"
    assert dom.count("<img") == len(report.FILES) - 2 == dom.count('src="data:image/png;base64,')
    assert "<script" not in dom.lower() and html.escape(XSS, quote=False) in dom  # the DOM's own serialising
    for src in dom.split('src="data:image/png;base64,')[1:]:
        data = binascii.a2b_base64(src.split('"', 1)[0])
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            assert image.format == "PNG" and image.width > 300
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    packed = pixels.astype(np.int64) @ np.array([1 << 16, 1 << 8, 1])  # one integer per colour: fast to count
    assert len(np.unique(packed)) > 50, "the screenshot is (nearly) blank"

    def count(hex_colour: str) -> int:
        rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(pixels.astype(int) - rgb).sum(axis=1) <= 6).sum())

    assert count("#f0f0f0") > 3000, "the tables' header rows are not on the page"
    for target in ("tflite", "onnx"):  # bars of the Pixel's and the host's runs, drawn in the latency plot
        assert count(colours()[target]) > 1000, f"no {target} bars drawn: the plot did not load"


def test_no_ok_runs_still_renders_and_removes_old_plots(written, tmp_path):
    store = open_store(tmp_path / "r.sqlite")
    rng = np.random.default_rng(1)
    fill(store, [result_doc(PIXEL, "shvit-edge-android", [
        run("a.tflite", "LiteRT", "gpu", rng, status="failed", error="GPU delegate: <unsupported>"),
        run("a.tflite", "LiteRT", "nnapi", rng, status="skipped", error=SKIPPED_ERROR)])])
    rows = store.runs()
    store.close()
    out = tmp_path / "out"
    shutil.copytree(written[0], out)  # an earlier report with plots
    paths = report.write_results_report(rows, out)
    assert [p.name for p in paths] == ["results.md", "results.html"]
    assert sorted(p.name for p in out.iterdir()) == ["results.html", "results.md"]
    page = (out / "results.html").read_text(encoding="utf-8")
    assert html.escape(report.NO_OK_RUNS) in page and "<img" not in page
    assert html.escape("GPU delegate: <unsupported>") in page and html.escape(SKIPPED_ERROR) in page
    md = (out / "results.md").read_text(encoding="utf-8")
    assert report.NO_OK_RUNS in md and ".png" not in md and "GPU delegate: \\<unsupported\\>" in md
    empty = report.write_results_report([], tmp_path / "empty")
    assert [p.name for p in empty] == ["results.md", "results.html"]
    assert report.NO_RUNS in empty[1].read_text(encoding="utf-8")


def test_a_file_or_a_folder_in_the_way_is_refused(tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    with pytest.raises(UsageError, match="a file, not a folder"):
        report.write_results_report([], target)
    assert target.read_text() == "not a folder"
    folder = tmp_path / "out"
    (folder / "results.html").mkdir(parents=True)
    with pytest.raises(UsageError, match="is a folder"):
        report.write_results_report([], folder)
    assert sorted(p.name for p in folder.iterdir()) == ["results.html"]


def test_a_row_with_nothing_but_a_status_is_reported():
    row = {"id": 7, "status": "ok", "source_tool": "x", "meaning": "in-app wall time", "tied": 0,
           "parity_status": "none", "stats_from": "none"}
    cells = report._cells(row)
    assert cells[report.HEAD.index("p50 ms")] == "-" and cells[-1] == report.NO_SHA
    assert report.summary_rows([row])[0] == {"id": 7, "status": "ok", "device": "(device not given)",
                                            "runtime": None, "setting": None, "model": "(model not given)",
                                            "meaning": "in-app wall time", "p50": None, "p90": None, "cv": None,
                                            "parity": "none", "tied": False}
    assert Path(report.__file__).name == "report.py"
