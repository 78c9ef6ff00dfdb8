"""The golden vectors the Python side shares with the Kotlin harness core (android_harness/core, JUnit-tested by
.ci/run) and its Swift mirror (ios_harness/HarnessCore): tests/golden/, written by tests/golden/make_golden.py.

Here: the Python readers still read them as they did when they were written (so the vectors are not stale), and
the result document the Kotlin core wrote (``result_kotlin.json``) is accepted and judged by ingest."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from shvit_edge.cli import cli
from shvit_edge.errors import InputError
from shvit_edge.harness.bundle import open_bundle
from shvit_edge.harness.documents import validate
from shvit_edge.harness.ingest import PASS, ingest
from shvit_edge.harness.records import latency_stats
from shvit_edge.harness.store import open_store
from shvit_edge.parity.metrics import compare

GOLDEN = Path(__file__).parent / "golden"
BAD = sorted(p for p in (GOLDEN / "bad").iterdir() if p.is_dir())


def _array(spec: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(spec["base64"]), dtype="<f4").reshape(spec["shape"])


def test_the_golden_bundle_reads_with_every_target():
    with open_bundle(GOLDEN / "bundle") as bundle:
        assert sorted(a.entry["target"] for a in bundle.artifacts) == ["coreml", "executorch", "onnx", "tflite"]
        kinds = {a.entry["input"]["kind"] for a in bundle.artifacts}
        assert kinds == {"image", "tensor"}  # a uint8 image input (Core ML) and float tensors
        for artifact in bundle.artifacts:
            x, ref = artifact.inputs(), artifact.reference()
            assert x.shape[0] == ref.shape[0] == 4 and ref.shape[1] == 10 and np.isfinite(ref).all()


@pytest.mark.parametrize("case", BAD, ids=[p.name for p in BAD])
def test_every_bad_golden_bundle_is_refused_naming_why(case):
    why = (case / "why.txt").read_text()
    with pytest.raises(InputError) as info:
        with open_bundle(case):
            pass
    assert why in str(info.value)


def test_the_golden_statistics_are_what_latency_stats_gives():
    cases = json.loads((GOLDEN / "latency_stats.json").read_text())["cases"]
    assert len(cases) >= 8
    for case in cases:
        now = latency_stats(case["latencies_ms"])
        assert now.keys() == case["stats"].keys()
        for key, value in case["stats"].items():
            assert (value is None and now[key] is None) or math.isclose(now[key], value, rel_tol=1e-12), key


def test_the_golden_parity_metrics_are_what_compare_gives():
    for case in json.loads((GOLDEN / "parity.json").read_text())["cases"]:
        now = compare(_array(case["output"]), _array(case["reference"])).as_dict()
        for key, value in case["metrics"].items():
            assert (value is None and now[key] is None) or math.isclose(now[key], value, rel_tol=1e-12), key


@pytest.mark.parametrize("name", ["result_host.json", "result_kotlin.json"])
def test_a_golden_result_is_valid_and_judged_pass_with_its_bundle(tmp_path, name):
    """result_host.json is the Python host harness's; result_kotlin.json is what the Kotlin core writes from a
    fake runtime that answers with the reference rows (android_harness/core's golden test keeps it current)."""
    doc = json.loads((GOLDEN / name).read_text())
    validate(doc, "result", name)
    with open_bundle(GOLDEN / "bundle") as bundle:
        assert doc["bundle"]["id"] == bundle.id
        shas = {a.entry["sha256"] for a in bundle.artifacts}
    assert {r["artifact_sha256"] for r in doc["runs"]} <= shas
    store = open_store(tmp_path / "db.sqlite")
    try:
        outcomes, _ = ingest([GOLDEN / "bundle", GOLDEN / name], store)
        runs = store.runs()
    finally:
        store.close()
    judged = [o for o in outcomes if o.kind != "bundle"]
    ok = sum(r["status"] == "ok" for r in doc["runs"])
    assert ok >= 1 and judged[0].parity.get(PASS) == ok, judged[0].parity  # skipped runs: parity "none"
    assert set(judged[0].parity) <= {PASS, "none"}, judged[0].parity
    assert len(runs) == len(doc["runs"])


def test_the_kotlin_result_covers_the_protocol():
    """The Kotlin-written document is not a copy of the host's: in-app meaning, every artifact, and runs that
    were skipped (targets Android does not run) next to the ones that ran."""
    doc = json.loads((GOLDEN / "result_kotlin.json").read_text())
    assert doc["harness"]["name"] != json.loads((GOLDEN / "result_host.json").read_text())["harness"]["name"]
    statuses = {r["status"] for r in doc["runs"]}
    assert {"ok", "skipped"} <= statuses, statuses
    for run in doc["runs"]:
        if run["status"] == "ok":
            assert run["meaning"] == "in-app wall time" and len(run["latencies_ms"]) == run.get("iterations",
                                                                                                  len(run["latencies_ms"]))


def test_the_cli_refuses_a_bad_golden_bundle_with_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["results", "ingest", str(GOLDEN / "bad" / "dotdot_path"), "--db",
                                      str(tmp_path / "db.sqlite")])
    assert result.exit_code == 2
    assert "has an empty, '.' or '..' part" in result.stderr and len(result.stderr.strip().splitlines()) == 1
