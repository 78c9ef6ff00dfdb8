"""README promises of `inspect`, `variants`, `quantize-report` and checkpoint loading that no other test held to
account (issue 13). Where a number is judged, it is recomputed here independently of the code under test (the
file's bytes, the state dict's tensors, the SHViT paper's table), not read back from it."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import shvit_edge
from shvit_edge.errors import CheckpointError
from shvit_edge.cli import cli

from test_checkpoint import _logits, _official as _raw  # the fixture's training-checkpoint dict

ATOL = 1e-4
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# ------------------------------------------------------------------------------------------------ inspect


def test_inspect_json_sha256_params_epoch_and_key_layout(calibrated_pth):
    """README: `inspect --json` keys ... `key_layout`, `sha256`, `params`, and `epoch` when the file records
    one: the digest is the file's, the parameter count the state dict's learnable tensors, the epoch the
    file's."""
    result = _cli("inspect", calibrated_pth, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["sha256"] == hashlib.sha256(calibrated_pth.read_bytes()).hexdigest()
    raw = _raw(calibrated_pth)
    learnable = sum(v.numel() for k, v in raw["model"].items() if not k.endswith(BN_BUFFERS))
    assert doc["params"] == learnable
    assert doc["epoch"] == raw["epoch"] and isinstance(doc["epoch"], int)
    assert doc["key_layout"] == "official"
    assert set(doc) >= {"layout", "variant", "num_classes", "distillation", "has_ema", "used_ema", "dtype",
                        "container", "key_layout", "sha256", "params", "epoch"}


def test_inspect_json_of_a_timm_file_without_an_epoch(timm_safetensors):
    result = _cli("inspect", timm_safetensors, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["key_layout"] == "timm" and doc["container"] == "safetensors"
    assert "epoch" not in doc  # the file records none
    assert doc["sha256"] == hashlib.sha256(timm_safetensors.read_bytes()).hexdigest()
    assert doc["params"] == sum(v.numel() for k, v in load_file(str(timm_safetensors)).items()
                                if not k.endswith(BN_BUFFERS))


# ------------------------------------------------------------------------------------ checkpoint forms


def test_bf16_weights_load_upcast_to_fp32(tmp_path, official_pth, reference_io):
    """README: fp16/bf16 weights are accepted, upcast to fp32, and `dtype` reports what was stored."""
    raw = _raw(official_pth)
    raw["model"] = {k: (v.bfloat16() if v.is_floating_point() else v) for k, v in raw["model"].items()}
    path = tmp_path / "bf16.pth"
    torch.save(raw, path)
    loaded = shvit_edge.load_checkpoint(path)
    assert loaded.dtype == "bfloat16" and loaded.variant == "shvit_s1"
    assert all(p.dtype == torch.float32 for p in loaded.model.state_dict().values() if p.is_floating_point())
    # exactly the stored values, upcast: the same as a float32 file of the bf16-rounded weights
    rounded = dict(raw, model={k: (v.float() if v.is_floating_point() else v) for k, v in raw["model"].items()})
    torch.save(rounded, tmp_path / "rounded.pth")
    x, ref = reference_io
    out = _logits(loaded.model, x)
    assert torch.equal(out, _logits(shvit_edge.load_checkpoint(tmp_path / "rounded.pth").model, x))
    assert torch.equal(loaded.model.head.l.weight, raw["model"]["head.l.weight"].float())
    assert (out - ref).abs().max().item() < 0.5  # bf16 keeps 8 bits of mantissa: close, not equal


@pytest.mark.parametrize("prefix", ["_orig_mod.", "_orig_mod.module.", "module._orig_mod."])
def test_torch_compile_prefix_loads(tmp_path, official_pth, reference_io, prefix):
    """README: a `_orig_mod.` prefix (a torch.compile'd model's state dict; with DDP also `module.`) loads."""
    raw = _raw(official_pth)
    raw["model"] = {prefix + k: v for k, v in raw["model"].items()}
    path = tmp_path / "compiled.pth"
    torch.save(raw, path)
    loaded = shvit_edge.load_checkpoint(path)
    x, ref = reference_io
    assert loaded.layout == "official"
    assert (_logits(loaded.model, x) - ref).abs().max().item() < ATOL


def test_timm_state_dict_ema_loads(tmp_path, timm_safetensors, reference_io):
    """README: timm's layout "bare or in a training checkpoint (`state_dict`, `state_dict_ema`)": the EMA
    weights are taken with --ema (API: use_ema=True), the others without."""
    ema = load_file(str(timm_safetensors))
    other = {k: (v + 0.5 if k == "head.l.bias" else v) for k, v in ema.items()}
    path = tmp_path / "timm_train.pth.tar"
    torch.save({"state_dict": other, "state_dict_ema": ema, "epoch": 7}, path)
    x, ref = reference_io
    loaded = shvit_edge.load_checkpoint(path, use_ema=True)
    assert (loaded.layout, loaded.has_ema, loaded.used_ema) == ("timm", True, True)
    assert (_logits(loaded.model, x) - ref).abs().max().item() < ATOL
    plain = shvit_edge.load_checkpoint(path)
    assert plain.has_ema and not plain.used_ema
    assert torch.allclose(_logits(plain.model, x), ref + 0.5, atol=ATOL)
    result = _cli("inspect", path, "--ema", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["layout"], doc["has_ema"], doc["used_ema"], doc["epoch"]) == ("timm", True, True, 7)
    # only EMA weights in the file: loading them needs --ema, and says so
    torch.save({"state_dict_ema": ema}, tmp_path / "ema_only.pth")
    with pytest.raises(CheckpointError, match="pass --ema"):
        shvit_edge.load_checkpoint(tmp_path / "ema_only.pth")


def test_legacy_non_zip_pth_loads(tmp_path, official_pth, reference_io):
    """README: `.pth`/`.pt`/`.bin` "(torch zip or legacy)": the pre-1.6 serialization, with the authors'
    `args` Namespace inside, loads weights-only."""
    path = tmp_path / "legacy.pth"
    torch.save(_raw(official_pth), path, _use_new_zipfile_serialization=False)
    assert not path.read_bytes().startswith(b"PK")  # really not a zip
    loaded = shvit_edge.load_checkpoint(path)
    assert (loaded.layout, loaded.container, loaded.extra.get("epoch")) == \
        ("official", "training-checkpoint", _raw(official_pth)["epoch"])
    x, ref = reference_io
    assert (_logits(loaded.model, x) - ref).abs().max().item() < ATOL
    bin_path = tmp_path / "pytorch_model.bin"  # a bare legacy state dict under another name
    torch.save(_raw(official_pth)["model"], bin_path, _use_new_zipfile_serialization=False)
    assert (_logits(shvit_edge.load_checkpoint(bin_path).model, x) - ref).abs().max().item() < ATOL


# ----------------------------------------------------------------------------------------------- variants

#: SHViT paper (Yun & Ro, CVPR 2024), Table: parameters (M) and FLOPs (= MACs, M) at the default resolution
PAPER = {"shvit_s1": (224, 6.3, 241), "shvit_s2": (224, 11.4, 366), "shvit_s3": (224, 14.2, 601),
         "shvit_s4": (256, 16.5, 986)}


def test_variants_agree_with_the_paper_and_an_independent_parameter_count():
    """`variants` measures its numbers on the code; here they are held against numbers from outside it: the
    paper's table (within 1%: the paper rounds, and its S2 is 11.4M against 11.45M counted) and, for the
    parameters, a count with plain torch of the fused model's tensors."""
    result = _cli("variants", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["variant"]: r for r in json.loads(result.stdout)["variants"] if r["family"] == "shvit"}
    assert list(rows) == list(PAPER)  # EfficientViT's rows: tests/test_efficientvit.py
    for name, (resolution, params_m, macs_m) in PAPER.items():
        row = rows[name]
        assert row["resolution"] == resolution
        assert row["params"] / 1e6 == pytest.approx(params_m, rel=0.01), (name, row["params"])
        assert row["macs"] / 1e6 == pytest.approx(macs_m, rel=0.01), (name, row["macs"])
    # the ranking the paper states: S1 < S2 < S3 < S4 in parameters and MACs
    assert [rows[n]["params"] for n in PAPER] == sorted(rows[n]["params"] for n in PAPER)
    assert [rows[n]["macs"] for n in PAPER] == sorted(rows[n]["macs"] for n in PAPER)
    # S1's fused parameters counted without the code's counter: every tensor of the deploy model's state dict
    # that is not a BatchNorm buffer (the deploy model has no BatchNorm left, so that is all of them)
    fused = shvit_edge.reparameterize(shvit_edge.create_model("shvit_s1"))
    state = fused.state_dict()
    assert not any(k.endswith(BN_BUFFERS) for k in state)
    assert rows["shvit_s1"]["params"] == sum(t.numel() for t in state.values())


# ---------------------------------------------------------------------------------------- quantize-report


def test_quantize_report_no_validate_and_show(monkeypatch):
    """README: `quantize-report ... [--no-validate] [--show N]`: --no-validate simulates only (no artifact is
    exported or verified, and the verdict says why), --show N lists the N worst layers in the table."""
    from shvit_edge import sensitivity

    def no_validation(*args, **kwargs):
        raise AssertionError("--no-validate exported and verified an artifact")

    reports = []
    real_report = sensitivity.report

    def recording_report(*args, **kwargs):
        reports.append(real_report(*args, **kwargs))
        return reports[-1]

    monkeypatch.setenv("COLUMNS", "80")  # a console of 80 columns (a pipe's): no layer name may be cut short
    monkeypatch.setattr(sensitivity, "_validate", no_validation)
    monkeypatch.setattr(sensitivity, "report", recording_report)
    result = _cli("quantize-report", "--target", "onnx", "--variant", "shvit_s1", "--resolution", "64",
                  "--quantize", "int8-dynamic", "--samples", "2", "--no-validate", "--show", "3")
    assert result.exit_code == 0, result.output
    (report,) = reports
    assert report.validation is None and report.verdict.endswith("not measured on the artifact: --no-validate")
    out = result.stdout
    assert "measured on the onnx artifact" not in out
    assert "not measured on the artifact: --no-validate" in " ".join(out.split())
    shown = [line.split("│")[1].strip() for line in out.splitlines()
             if line.startswith("│") and re.search(r"│\s*(conv|depthwise|linear)", line)]
    assert len(report.layers) > 50  # S1 has many more quantizable layers than are shown
    assert shown == [c.layer for c in report.layers[:3]]
    sqnrs = [c.sqnr_db for c in report.layers]
    assert sqnrs == sorted(sqnrs)  # worst first
