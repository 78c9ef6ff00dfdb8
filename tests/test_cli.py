"""The command line: variants, inspect, exit codes, and a start-up that does not import torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from shvit_edge.cli import cli
from shvit_edge.models.registry import variant_stats
from shvit_edge.models.variants import VARIANTS


def _run(*args):
    return CliRunner().invoke(cli, list(args))


def test_variants_json_lists_every_variant_with_measured_numbers():
    result = _run("variants", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [v["variant"] for v in doc["variants"] if v["family"] == "shvit"] == list(VARIANTS)
    assert {v["family"] for v in doc["variants"]} >= {"shvit", "efficientvit"}
    for row in doc["variants"]:
        stats = variant_stats(row["variant"])
        assert (row["params"], row["macs"]) == (stats["params"], stats["macs"])
        if row["family"] == "shvit":
            assert row["resolution"] == VARIANTS[row["variant"]].resolution
    assert {v["variant"]: v["resolution"] for v in doc["variants"]}["shvit_s4"] == 256


def test_variants_table():
    result = _run("variants")
    assert result.exit_code == 0, result.output
    for name in VARIANTS:
        assert name in result.stdout
    assert "6.31M" in result.stdout and "241M" in result.stdout


@pytest.mark.parametrize("fixture,layout", [("official_pth", "official"), ("timm_safetensors", "timm")])
def test_inspect_json(request, fixture, layout):
    path = request.getfixturevalue(fixture)
    result = _run("inspect", str(path), "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert {k: doc[k] for k in ("layout", "variant", "num_classes", "distillation", "has_ema", "dtype")} == {
        "layout": layout, "variant": "shvit_s1", "num_classes": 1000, "distillation": False,
        "has_ema": False, "dtype": "float32"}


def test_inspect_table(official_pth):
    result = _run("inspect", str(official_pth))
    assert result.exit_code == 0, result.output
    assert "shvit_s1" in result.stdout and "official" in result.stdout


def test_unknown_variant_and_unknown_option_are_usage_errors(official_pth):
    result = _run("inspect", str(official_pth), "--variant", "shvit_s9")
    assert result.exit_code == 2 and "unknown variant" in result.output
    assert _run("inspect", str(official_pth), "--bogus").exit_code == 2
    assert _run("inspect").exit_code == 2


def test_console_script_starts_without_torch_and_reports_errors_cleanly(tmp_path):
    code = "import sys, shvit_edge, shvit_edge.cli; assert 'torch' not in sys.modules, 'torch imported at start'"
    subprocess.run([sys.executable, "-c", code], check=True)
    missing = tmp_path / "missing.pth"
    proc = subprocess.run([sys.executable, "-m", "shvit_edge.cli", "inspect", str(missing)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip() == f"Error: {missing}: no such file"


def test_version():
    result = _run("--version")
    assert result.exit_code == 0 and "shvit-edge" in result.output
