"""Every model family other than SHViT through the rest of the tool, unchanged: a quantized export (verified on the
photos), ``bench``, ``bundle``, the host harness and ``results ingest``, through the CLI.

SHViT's own tests cover each command in depth; here each registered family's smallest variant (fewest MACs) goes
once through all of them, on ONNX (the quickest target to convert) at the smallest side from 64 px up that the
family accepts, so a family that breaks a command's assumptions (a preprocessing, a layout, a resolution rule, the
eager baseline rebuilt in a worker) fails here by name. Untrained weights: the commands do not depend on them,
and the seeded model is guarded to react to its input so the parity judgments have something to judge.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from shvit_edge.cli import cli
from shvit_edge.models.registry import families, measure

pytestmark = pytest.mark.extras("onnx")

OTHER_FAMILIES = [f for f in families() if f.name != "shvit"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def smallest(family) -> tuple[str, int]:
    """The family's variant with the fewest MACs, and the smallest square side from 64 up it accepts."""
    from shvit_edge.errors import UsageError
    from shvit_edge.models.variants import parse_resolution

    variant = min(family.variants(), key=lambda v: measure(family, v)["macs"])
    for side in range(64, family.default_resolution(variant) + 1, 16):
        try:
            family.check_resolution(variant, parse_resolution(side))
        except UsageError:
            continue
        return variant, side
    raise AssertionError(f"{family.name}: no side from 64 to its default is accepted")


@pytest.mark.parametrize("family", OTHER_FAMILIES, ids=lambda f: f.name)
def test_quantize_verify_bench_bundle_and_harness_work_unchanged(family, images_dir, tmp_path):
    import torch

    variant, side = smallest(family)
    model = family.untrained(variant, seed=3)
    with torch.no_grad():
        x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0))
        out = model(x)
    assert (out[0] - out[1]).abs().max() > 1e-3 * out.abs().max(), "the seeded model ignores its input"

    out_dir = tmp_path / "out"
    exported = run("export", "--target", "onnx", "--variant", variant, "--seed", 3, "--resolution", side,
                   "--quantize", "int8", "--calibration", images_dir, "--calibration-samples", 5, "--images",
                   images_dir, "--out", out_dir, "--json")
    assert exported.exit_code in (0, 1), exported.output  # 1: the untrained model's int8 error fails its check
    report = json.loads(exported.stdout)
    (artifact,) = report["artifacts"]
    (result,) = report["verification"]  # export verifies a quantized artifact on the images
    assert result["status"] in ("pass", "fail") and result["metrics"], result  # judged, not errored or skipped
    assert exported.exit_code == (result["status"] == "fail")
    manifest = json.loads(open(artifact["manifest"]).read())
    assert (manifest["family"], manifest["variant"], manifest["resolution"]) == (family.name, variant, [side, side])
    assert manifest["quantization"]["mode"] == "int8"

    benched = run("bench", out_dir, "--iterations", 2, "--rounds", 1, "--warmup", 0, "--json")
    assert benched.exit_code == 0, benched.output
    doc = json.loads(benched.stdout)
    (row,) = doc["results"]
    assert (row["variant"], row["target"], row["iterations"]) == (variant, "onnx", 2)
    assert doc["baseline"]["variant"] == variant  # the eager model rebuilt from the family in a worker

    bundle, result_path, db = tmp_path / "bundle", tmp_path / "result.json", tmp_path / "r.sqlite"
    bundled = run("bundle", out_dir, "--out", bundle, "--images", images_dir, "--samples", 1, "--warmup", 0,
                  "--iterations", 1)
    assert bundled.exit_code == 0, bundled.output
    harnessed = run("harness", "run", bundle, "--out", result_path)
    assert harnessed.exit_code == 0, harnessed.output
    ingested = run("results", "ingest", result_path, bundle, "--db", db, "--json")
    assert ingested.exit_code in (0, 1), ingested.output
    (outcome,) = [o for o in json.loads(ingested.stdout)["ingested"] if o["kind"] == "document"]
    assert outcome["runs_stored"] == 1 and sum(outcome["parity"].values()) == 1, outcome
