"""The recorded ``benchmarks/compare.py`` run (issue 18): every registered variant of every family exported to all
four targets, verified on photos and random inputs, lowered by ExecuTorch to one XNNPACK partition at batch 1 and
16, timed on every host runtime at batch 1 and 16 in one run; and the README quotes the ratios that run measured,
not others.

The record is a JSON file in the repository; these checks read it (no export here: the run takes about an hour).
A family or variant added without a new recorded run fails the first test."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "benchmarks" / "results" / "compare.json"
RUNTIMES = ("pytorch", "onnx", "executorch", "tflite")
TARGETS = ("coreml", "onnx", "executorch", "tflite")


@pytest.fixture(scope="module")
def record() -> dict:
    return json.loads(RECORD.read_text())


def registered_variants() -> list[str]:
    from shvit_edge.models.registry import families

    return [v for f in families() for v in f.variants()]


def test_the_record_covers_every_registered_variant(record):
    want = set(registered_variants())
    assert want <= set(record["variants"]), f"not in the recorded run: {sorted(want - set(record['variants']))}"
    assert want <= set(record["verify"]) and want <= set(record["table"])


def readme_section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "### Compared with its rivals" in readme
    return readme.split("### Compared with its rivals", 1)[1].split("\n#", 1)[0]


def test_verify_ran_on_photos_and_random_inputs(record):
    """Both kinds of input a user's checks show a model: real photos and seeded random pixels."""
    inputs = record["verify"]["inputs"]
    assert len(inputs["images"]) >= 5 and inputs["random"] >= 8, inputs


@pytest.mark.parametrize("variant", registered_variants())
def test_every_variant_converted_to_all_four_targets_and_passed_verify(record, variant):
    verified = record["verify"][variant]
    for target in TARGETS:
        entry = verified.get(target)
        assert entry is not None, f"{variant}: no {target} artifact was verified"
        assert entry["status"] == "pass", (variant, target, entry["reason"])
        assert entry["cosine"] is not None and entry["cosine"] > 0.999, (variant, target, entry["reason"])
    # the batch-16 programs are other graphs (SepViT's window tokens are repeated per image there)
    for batch in ("b1", "b16"):
        lowered = record["delegation"][variant][batch]
        assert lowered["partitions"] == 1 and lowered["ops_outside_total"] == 0, (variant, batch, lowered)


@pytest.mark.parametrize("variant", registered_variants())
def test_every_variant_was_timed_on_every_host_runtime_at_both_batches(record, variant):
    row = record["table"][variant]
    for batch in ("b1", "b16"):
        assert set(RUNTIMES) <= set(row.get(batch, {})), f"{variant} {batch}: only {sorted(row.get(batch, {}))}"
        for runtime in RUNTIMES:
            cell = row[batch][runtime]
            assert cell["latency_p50_ms"] > 0 and cell["throughput_ips"] > 0


def test_the_run_is_one_thread_alternating_rounds_with_no_failure(record):
    settings = record["settings"]
    assert settings["threads"] == 1 and settings["rounds"] >= 2
    assert record["failures"] == [] or record["failures"] == {}
    assert not any(e["failures"] for v in record["exports"].values() for e in v.values())
    assert record["protocol"]["batches"] == [1, 16]


def test_the_readme_quotes_the_measured_claim_ratios(record):
    section = readme_section()
    measured = [c for c in record["claims"] if c["measured"]]
    assert measured, "the record measured no claim"
    for claim in measured:
        line = next((x for x in section.splitlines() if x.startswith(f"| {claim['claim']}")), None)
        assert line is not None, f"README has no row for {claim['claim']!r}"
        for runtime, ratio in claim["measured"].items():
            assert re.search(rf"{runtime} {ratio:.2f}x", line), f"{runtime} {ratio:.2f}x not in {line}"
