"""The on-device validation loop, run here: bundle -> harness run -> results ingest -> results report.

The bundle is of the calibrated S1 at 224 for every target (Core ML runs in the coreml-sim interpreter in the host
harness); the result is the host harness's. Judging at ingest is verify's judging: the same metrics on the same
outputs, the same tolerances. What a device must not get past: outputs perturbed beyond tolerance (stored as a
parity failure), outputs of the wrong shape, a document that breaks the schema, an oversized file (refused, exit
2, nothing stored).
"""

from __future__ import annotations

import base64
import copy
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from shvit_edge.cli import cli
from shvit_edge.harness.bundle import open_bundle
from shvit_edge.harness.documents import validate
from shvit_edge.harness.records import latency_stats

TARGETS = {"coreml", "executorch", "onnx", "tflite"}


def run(*args):
    return CliRunner().invoke(cli, [*map(str, args)])


def stored(db: Path) -> tuple[int, int, int]:
    """(documents, runs, bundles) in the store (0s when it does not exist)."""
    if not db.exists():
        return 0, 0, 0
    with sqlite3.connect(db) as connection:
        return tuple(connection.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                     for t in ("documents", "runs", "bundles"))


def runs_of(db: Path) -> list[dict]:
    from shvit_edge.harness.store import open_store

    store = open_store(db, create=False)
    try:
        return store.runs()
    finally:
        store.close()


def test_the_loop_bundle_harness_ingest_report(s1_bundle, s1_bundle_result, tmp_path):
    """The fixtures ran ``shvit-edge bundle`` and ``shvit-edge harness run``; here the rest of the loop."""
    result_path, db, report = s1_bundle_result, tmp_path / "r.sqlite", tmp_path / "report"
    doc = json.loads(result_path.read_text())
    validate(doc, "result", "result.json")
    with open_bundle(s1_bundle) as bundle:
        assert doc["bundle"]["id"] == bundle.id
        names = {a.name: a.entry["target"] for a in bundle.artifacts}
    assert set(names.values()) == TARGETS
    runs = {r["artifact"]: r for r in doc["runs"]}
    assert set(runs) == set(names)
    for r in runs.values():
        assert r["status"] == "ok", r
        assert len(r["latencies_ms"]) == 2 and r["load_ms"] > 0 and r["first_inference_ms"] > 0
        assert r["output"]["shape"] == [5 + 2, 1000]
    coreml = next(r for n, r in runs.items() if names[n] == "coreml")
    assert coreml["setting"] == "coreml-sim" and coreml["meaning"] == "interpreter, not a latency"
    assert coreml["details"]["fp16_headroom"]["overflowing"] == []

    ingested = run("results", "ingest", result_path, s1_bundle, "--db", db, "--json")
    assert ingested.exit_code == 0, ingested.output
    outcomes = {o["kind"]: o for o in json.loads(ingested.stdout)["ingested"]}
    assert outcomes["document"]["runs_stored"] == 4 and outcomes["document"]["parity"] == {"pass": 4}
    rows = runs_of(db)
    assert {r["target"] for r in rows} == TARGETS and all(r["tied"] == 1 for r in rows)
    for row in rows:  # statistics derived here from the raw samples
        assert row["stats_from"] == "raw" and row["p50"] == pytest.approx(np.median(runs[row["model"]]["latencies_ms"]))
    again = run("results", "ingest", result_path, "--db", db, "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["ingested"][0]["already_stored"] is True
    assert stored(db)[1] == 4

    reported = run("results", "report", "--out", report, "--db", db)
    assert reported.exit_code == 0, reported.output
    html = (report / "results.html").read_text()
    for name in names:
        assert name in html
    listed = run("results", "list", "--db", db, "--target", "coreml", "--json")
    assert listed.exit_code == 0 and len(json.loads(listed.stdout)["runs"]) == 1


def test_a_result_before_its_bundle_is_judged_when_the_bundle_arrives(s1_bundle, s1_bundle_result, tmp_path):
    db = tmp_path / "r.sqlite"
    first = run("results", "ingest", s1_bundle_result, "--db", db, "--json")
    assert first.exit_code == 0, first.output
    assert {r["parity_status"] for r in runs_of(db)} == {"unjudged"}
    assert all(r["tied"] == 0 and "ingest it" in r["parity_reason"] for r in runs_of(db))
    second = run("results", "ingest", s1_bundle, "--db", db, "--json")
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)["ingested"][0]["parity"] == {"pass": 4}
    assert {(r["parity_status"], r["tied"]) for r in runs_of(db)} == {("pass", 1)}


def test_parity_at_ingest_equals_verify(s1_bundle, s1_bundle_result, calibrated_224, images_dir, tmp_path):
    from shvit_edge.verify import VerifyOptions, verify

    db = tmp_path / "r.sqlite"
    assert run("results", "ingest", s1_bundle_result, s1_bundle, "--db", db).exit_code == 0
    at_ingest = {r["model"]: r["parity_metrics"] for r in runs_of(db)}
    folder = shutil.copytree(calibrated_224, tmp_path / "a")
    checked = [folder / "shvit_s1_224x224.onnx", folder / "shvit_s1_224x224_fp16.mlpackage"]
    results = verify(checked, VerifyOptions(images=str(images_dir), samples=2, seed=0))
    assert len(results) == 2
    for r in results:
        (by_verify,) = r.metrics.values()
        by_ingest = at_ingest[Path(r.artifact).name]
        for key in ("cosine", "max_abs", "mean_abs", "sqnr_db", "top1_agreement", "top5_overlap", "samples"):
            assert by_ingest[key] == pytest.approx(by_verify[key], rel=1e-9, abs=1e-12), (r.artifact, key)


def _with_output(doc: dict, index: int, array: np.ndarray) -> dict:
    doc = copy.deepcopy(doc)
    doc["runs"][index]["output"] = {"shape": list(array.shape), "dtype": "float32",
                                    "base64": base64.b64encode(array.astype("<f4").tobytes()).decode()}
    return doc


def _output(run_doc: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(run_doc["output"]["base64"]), "<f4").reshape(run_doc["output"]["shape"])


def test_outputs_perturbed_beyond_tolerance_are_stored_as_a_parity_failure(s1_bundle, s1_bundle_result, tmp_path):
    doc = json.loads(s1_bundle_result.read_text())
    i = next(i for i, r in enumerate(doc["runs"]) if r["artifact"].endswith(".onnx"))
    out = _output(doc["runs"][i])
    noisy = out + np.random.default_rng(0).normal(0, 0.05 * out.std(), out.shape).astype(np.float32)
    path = tmp_path / "perturbed.json"
    path.write_text(json.dumps(_with_output(doc, i, noisy)))
    db = tmp_path / "r.sqlite"
    result = run("results", "ingest", path, s1_bundle, "--db", db)
    assert result.exit_code == 1, result.output
    rows = {r["model"]: r for r in runs_of(db)}
    onnx = rows[doc["runs"][i]["artifact"]]
    assert onnx["parity_status"] == "fail" and "cosine" in onnx["parity_reason"]
    assert onnx["parity_metrics"]["cosine"] < onnx["tolerance"]["cosine"]
    assert sorted(r["parity_status"] for r in rows.values()) == ["fail", "pass", "pass", "pass"]


@pytest.mark.parametrize("break_it, message", [
    (lambda d: d["runs"][0]["output"].update(shape=[7, 999],
                                             base64=base64.b64encode(bytes(7 * 999 * 4)).decode()),
     "the bundle's reference is [7, 1000]"),
    (lambda d: d["runs"][0]["output"].update(shape=[7, 1000], base64="AAAA"), "takes 28000"),
    (lambda d: d["runs"][0].update(latencies_ms=[1.0, -2.0]), "runs/0/latencies_ms/1"),
    (lambda d: d.pop("device"), "device"),
    (lambda d: d["runs"][0].update(status="great"), "runs/0/status"),
    (lambda d: d["runs"][0].update(artifact_sha256="0" * 64), "not an artifact of bundle"),
    (lambda d: d["runs"][0].update(surprise=1), "surprise"),
])
def test_a_bad_result_is_refused_and_nothing_is_stored(s1_bundle, s1_bundle_result, tmp_path, break_it, message):
    doc = json.loads(s1_bundle_result.read_text())
    break_it(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    db = tmp_path / "r.sqlite"
    result = run("results", "ingest", s1_bundle, path, "--db", db)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert stored(db) == (0, 0, 0)  # the bundle given with it is not stored either: all or nothing


def test_an_oversized_file_is_refused_unread(tmp_path):
    from shvit_edge.harness.ingest import MAX_DOCUMENT_BYTES

    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(MAX_DOCUMENT_BYTES + 1)  # sparse: refused by its size before a byte is read
    db = tmp_path / "r.sqlite"
    result = run("results", "ingest", big, "--db", db)
    assert result.exit_code == 2 and "more than" in result.output, result.output
    assert stored(db) == (0, 0, 0)


def test_a_failed_run_is_stored_as_a_failure(s1_bundle, s1_bundle_result, tmp_path):
    doc = json.loads(s1_bundle_result.read_text())
    failed = {k: v for k, v in doc["runs"][0].items() if k not in ("output", "latencies_ms")}
    doc["runs"][0] = {**failed, "status": "failed", "error": "model load failed: out of memory"}
    path = tmp_path / "failed.json"
    path.write_text(json.dumps(doc))
    db = tmp_path / "r.sqlite"
    result = run("results", "ingest", path, s1_bundle, "--db", db, "--json")
    assert result.exit_code == 1, result.output
    rows = {r["model"]: r for r in runs_of(db)}
    row = rows[doc["runs"][0]["artifact"]]
    assert row["status"] == "failed" and row["error"] == "model load failed: out of memory"
    assert row["parity_status"] == "none" and row["tied"] == 1
    assert len(rows) == 4


def test_output_files_beside_the_document_are_read_and_checked(s1_bundle, s1_bundle_result, tmp_path):
    import hashlib

    doc = json.loads(s1_bundle_result.read_text())
    (tmp_path / "out").mkdir()
    for i, r in enumerate(doc["runs"]):
        raw = base64.b64decode(r["output"]["base64"])
        (tmp_path / "out" / f"{i}.f32").write_bytes(raw)
        r["output"] = {"shape": r["output"]["shape"], "dtype": "float32", "file": f"out/{i}.f32",
                       "sha256": hashlib.sha256(raw).hexdigest()}
    path = tmp_path / "result.json"
    path.write_text(json.dumps(doc))
    db = tmp_path / "r.sqlite"
    assert run("results", "ingest", path, s1_bundle, "--db", db).exit_code == 0
    assert {r["parity_status"] for r in runs_of(db)} == {"pass"}
    # a file changed after the document was written, and a file outside the document's folder: refused
    (tmp_path / "out" / "0.f32").write_bytes(bytes(len(raw)))
    path.write_text(json.dumps(doc) + " ")
    result = run("results", "ingest", path, "--db", tmp_path / "r2.sqlite")
    assert result.exit_code == 2 and "fails its sha256" in result.output, result.output
    doc["runs"][0]["output"]["file"] = "../elsewhere.f32"
    path.write_text(json.dumps(doc))
    result = run("results", "ingest", path, "--db", tmp_path / "r3.sqlite")
    assert result.exit_code == 2 and "inside the bundle" in result.output or "'..'" in result.output, result.output
    assert stored(tmp_path / "r2.sqlite") == (0, 0, 0) and stored(tmp_path / "r3.sqlite") == (0, 0, 0)


def test_the_bundled_program_verifies_with_executorchs_own_api(s1_bundle):
    from executorch.extension.pybindings.portable_lib import _load_bundled_program_from_buffer

    with open_bundle(s1_bundle) as bundle:
        (et,) = [a for a in bundle.artifacts if a.entry["target"] == "executorch"]
        program = _load_bundled_program_from_buffer((bundle.root / et.entry["bundled_program"]).read_bytes())
        cases = et.inputs().shape[0]
        for i in range(cases):  # each case: the bundle's input, the PyTorch reference as expected output
            program.verify_result_with_bundled_expected_output("forward", i, 0.0, et.tolerance.max_abs)
        with pytest.raises(RuntimeError):  # the expected outputs are really compared: far tighter fails
            program.verify_result_with_bundled_expected_output("forward", 0, 0.0, 1e-9)
        with pytest.raises(Exception):  # noqa: B017 - one case per input, no more
            program.verify_result_with_bundled_expected_output("forward", cases, 0.0, 1.0)


def test_the_bundle_holds_verifys_inputs_and_the_reference_outputs(s1_bundle, calibrated_source, images_dir):
    import torch

    from shvit_edge.images import list_images, load_pixels, normalize
    from shvit_edge.verify import reference_space

    with open_bundle(s1_bundle) as bundle:
        validate(json.loads((s1_bundle / "bundle.json").read_text()), "bundle", "bundle.json")
        assert bundle.doc["inputs"] == {"images": [p.name for p in list_images(images_dir)], "samples": 2, "seed": 0}
        for a in bundle.artifacts:
            m, x = a.manifest, a.inputs()
            pixels = load_pixels(list_images(images_dir), m.resolution, m.preprocessing)
            if m.inputs[0].kind == "image":
                assert x.dtype == np.uint8 and np.array_equal(x[:5], pixels)
                reference_input = normalize(x, m.preprocessing)
            else:
                assert x.dtype == np.float32 and np.array_equal(x[:5], normalize(pixels, m.preprocessing))
                reference_input = x
            with torch.no_grad():
                logits = calibrated_source.model(torch.from_numpy(reference_input)).numpy()
            np.testing.assert_allclose(a.reference(), reference_space(m, logits), rtol=1e-4, atol=1e-5)
            assert a.entry["run"] == {**a.entry["run"], "warmup": 0, "iterations": 2}
            expected = {"coreml": ["cpu_only", "cpu_and_gpu", "cpu_and_ne", "all"], "executorch": ["xnnpack"],
                        "tflite": ["xnnpack", "gpu", "gpu-fp16", "nnapi"], "onnx": ["cpu"]}[m.target]
            assert a.entry["run"]["settings"] == expected
        listed = {f["path"] for f in bundle.doc["files"]}
        on_disk = {p.relative_to(s1_bundle).as_posix() for p in s1_bundle.rglob("*") if p.is_file()}
        assert on_disk - listed == {"bundle.json"} and listed <= on_disk


def test_latency_statistics_from_raw_samples():
    stats = latency_stats([4.0, 1.0, 3.0, 2.0, 100.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    assert stats["count"] == 10 and stats["min"] == 1.0 and stats["max"] == 100.0
    assert stats["p50"] == 5.5 and stats["mean"] == pytest.approx(14.5)
    assert stats["trimmed_mean"] == pytest.approx(np.mean([2, 3, 4, 5, 6, 7, 8, 9]))  # 10% off each end
    assert stats["cv"] == pytest.approx(np.std([4, 1, 3, 2, 100, 5, 6, 7, 8, 9]) / 14.5)
    assert latency_stats([]) == {}
