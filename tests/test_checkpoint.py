"""Loading checkpoints: every accepted form gives the reference logits; every bad input one clear error."""

from __future__ import annotations

import argparse
import pickle
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

import shvit_edge
from shvit_edge.cli import cli
from shvit_edge.errors import CheckpointError, UnsafeCheckpointError, UsageError
from shvit_edge.models.shvit_family import official_to_timm_key, timm_to_official_key
from shvit_edge.models.variants import VARIANTS

from conftest import randomize

ATOL = 1e-4


def _official(official_pth) -> dict:
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(official_pth, map_location="cpu", weights_only=True)


def _logits(model, x):
    with torch.no_grad():
        return model(x)


# ------------------------------------------------------------------------------------ the fixtures


@pytest.mark.parametrize("fixture,layout", [("official_pth", "official"), ("timm_safetensors", "timm")])
def test_fixtures_give_the_reference_logits_unfused_and_fused(request, reference_io, fixture, layout):
    x, ref = reference_io
    loaded = shvit_edge.load_checkpoint(request.getfixturevalue(fixture))
    assert (loaded.variant, loaded.num_classes, loaded.distillation, loaded.layout) == \
        ("shvit_s1", 1000, False, layout)
    assert not loaded.model.training
    assert (_logits(loaded.model, x) - ref).abs().max().item() < ATOL
    assert (_logits(shvit_edge.reparameterize(loaded.model), x) - ref).abs().max().item() < ATOL


# -------------------------------------------------------------------------- the accepted file forms


def _check_same_as_reference(path, reference_io, **kwargs):
    x, ref = reference_io
    loaded = shvit_edge.load_checkpoint(path, **kwargs)
    assert loaded.variant == "shvit_s1"
    assert (_logits(loaded.model, x) - ref).abs().max().item() < ATOL
    return loaded


def test_bare_official_state_dict_is_plain(tmp_path, official_pth, reference_io):
    path = tmp_path / "bare.pth"
    torch.save(_official(official_pth)["model"], path)
    loaded = _check_same_as_reference(path, reference_io)
    assert (loaded.layout, loaded.container) == ("plain", "state-dict")


def test_official_keys_in_safetensors(tmp_path, official_pth, reference_io):
    path = tmp_path / "official.safetensors"
    state = {k: v for k, v in _official(official_pth)["model"].items()}
    save_file(state, str(path))
    assert _check_same_as_reference(path, reference_io).layout == "plain"


def test_timm_layout_in_a_pth_training_checkpoint(tmp_path, timm_safetensors, reference_io):
    from safetensors.torch import load_file

    path = tmp_path / "timm_train.pth.tar"  # the name says nothing: the content decides
    torch.save({"state_dict": load_file(str(timm_safetensors)), "epoch": 3, "arch": "shvit_s1"}, path)
    loaded = _check_same_as_reference(path, reference_io)
    assert (loaded.layout, loaded.container) == ("timm", "training-checkpoint")


def test_module_prefix_and_2d_pointwise_weights(tmp_path, official_pth, reference_io):
    ckpt = _official(official_pth)
    squeezed = 0
    state = {}
    for k, v in ckpt["model"].items():
        if v.ndim == 4 and v.shape[2:] == (1, 1):
            v, squeezed = v[:, :, 0, 0].clone(), squeezed + 1
        state["module." + k] = v
    assert squeezed > 50
    ckpt["model"] = state
    path = tmp_path / "ddp.pth"
    torch.save(ckpt, path)
    assert _check_same_as_reference(path, reference_io).layout == "official"


def test_fp16_weights_are_upcast(tmp_path, official_pth, reference_io):
    ckpt = _official(official_pth)
    ckpt["model"] = {k: (v.half() if v.is_floating_point() else v) for k, v in ckpt["model"].items()}
    path = tmp_path / "half.pth"
    torch.save(ckpt, path)
    loaded = shvit_edge.load_checkpoint(path)
    assert loaded.dtype == "float16"
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    head = ckpt["model"]["head.l.weight"].float()
    assert torch.equal(loaded.model.head.l.weight, head)
    x, ref = reference_io
    assert (_logits(loaded.model, x) - ref).abs().max().item() < 0.05  # fp16 rounding of the weights only


def test_ema_weights_on_request(tmp_path, official_pth, reference_io):
    ckpt = _official(official_pth)
    ema = {k: (v * 0.5 if k == "head.l.bias" else v) for k, v in ckpt["model"].items()}
    ckpt["model_ema"] = ema
    path = tmp_path / "with_ema.pth"
    torch.save(ckpt, path)
    plain = _check_same_as_reference(path, reference_io)
    assert plain.has_ema and not plain.used_ema
    loaded = shvit_edge.load_checkpoint(path, use_ema=True)
    assert loaded.used_ema
    assert torch.equal(loaded.model.head.l.bias, ema["head.l.bias"])
    assert not torch.equal(loaded.model.head.l.bias, plain.model.head.l.bias)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_class_count_and_distillation_is_detected(tmp_path, name):
    num_classes, distillation = {"shvit_s1": (1000, False), "shvit_s2": (10, True),
                                 "shvit_s3": (37, False), "shvit_s4": (1000, True)}[name]
    model = randomize(shvit_edge.create_model(name, num_classes, distillation), seed=11)
    path = tmp_path / "state.safetensors"
    save_file(model.state_dict(), str(path))
    loaded = shvit_edge.load_checkpoint(path)
    assert (loaded.variant, loaded.num_classes, loaded.distillation) == (name, num_classes, distillation)
    assert loaded.layout == "timm"
    x = torch.randn(1, 3, 128, 128)
    assert torch.allclose(_logits(loaded.model, x), _logits(model, x), atol=1e-6)


def test_official_layout_of_a_distilled_model(tmp_path):
    """Our model's state dict renamed to the authors' keys loads back through the remap, head_dist included."""
    model = randomize(shvit_edge.create_model("shvit_s3", 5, distillation=True), seed=2)
    state = {timm_to_official_key(k): v for k, v in model.state_dict().items()}
    assert any(k.startswith("blocks3.2.1.") for k in state) and "head_dist.l.weight" in state
    path = tmp_path / "official_s3.pth"
    torch.save({"model": state, "epoch": 1, "args": argparse.Namespace(model="shvit_s3")}, path)
    loaded = shvit_edge.load_checkpoint(path, variant="shvit_s3")
    assert (loaded.layout, loaded.num_classes, loaded.distillation) == ("official", 5, True)
    x = torch.randn(1, 3, 96, 96)
    assert torch.allclose(_logits(loaded.model, x), _logits(model, x), atol=1e-6)


def test_key_remap_round_trips(official_pth):
    keys = list(_official(official_pth)["model"])
    assert all(timm_to_official_key(official_to_timm_key(k)) == k for k in keys)
    assert official_to_timm_key("blocks2.0.0.m.c.weight") == "stages.1.downsample.0.m.c.weight"
    assert official_to_timm_key("blocks2.1.conv1.c.weight") == "stages.1.downsample.2.conv1.c.weight"
    assert official_to_timm_key("blocks3.2.1.m.pw2.bn.bias") == "stages.2.downsample.4.m.pw2.bn.bias"
    assert official_to_timm_key("blocks3.3.mixer.m.qkv.c.weight") == "stages.2.blocks.0.mixer.m.qkv.c.weight"
    assert official_to_timm_key("blocks1.1.ffn.m.pw1.c.weight") == "stages.0.blocks.1.ffn.m.pw1.c.weight"


# ------------------------------------------------------------------------------------ safety


@dataclass
class Foreign:
    """A type no allow-list knows."""

    value: int = 1


class Payload:
    """Unpickling this would create a file: proof that code from a checkpoint ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_foreign_class_is_refused_with_its_name(tmp_path, official_pth):
    ckpt = _official(official_pth)
    ckpt["args"] = Foreign(3)
    path = tmp_path / "foreign.pth"
    torch.save(ckpt, path)
    with pytest.raises(UnsafeCheckpointError) as err:
        shvit_edge.load_checkpoint(path)
    assert any(t.endswith("Foreign") for t in err.value.types)
    assert "Foreign" in str(err.value) and "--trust-checkpoint" in str(err.value) and str(path) in str(err.value)
    # the opt-in loads it
    assert shvit_edge.load_checkpoint(path, trust_checkpoint=True).variant == "shvit_s1"


@pytest.mark.parametrize("zipfile", [True, False])
def test_code_in_a_pickle_is_never_executed(tmp_path, official_pth, zipfile):
    marker = tmp_path / "pwned"
    ckpt = _official(official_pth)
    ckpt["optimizer"] = Payload(marker)
    path = tmp_path / "payload.pth"
    torch.save(ckpt, path, _use_new_zipfile_serialization=zipfile)
    with pytest.raises(UnsafeCheckpointError, match="--trust-checkpoint") as err:
        shvit_edge.load_checkpoint(path)
    assert not marker.exists()
    assert any("open" in t for t in err.value.types), err.value.types


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_plain_pickle_with_code_is_refused_by_name(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": Payload(marker)}, protocol=protocol))
    with pytest.raises(UnsafeCheckpointError, match=r"refused to unpickle .*open") as err:
        shvit_edge.load_checkpoint(path)
    assert not marker.exists()
    assert not any(t.startswith("torch.") for t in err.value.types)


# ------------------------------------------------------------------------------------ bad inputs


def _truncated(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def _saved(tmp_path: Path, obj, name="bad.pth") -> Path:
    path = tmp_path / name
    torch.save(obj, path)
    return path


def _edited(tmp_path, official_pth, edit) -> Path:
    ckpt = _official(official_pth)
    edit(ckpt["model"])
    return _saved(tmp_path, ckpt)


def _case_missing(tmp_path, official_pth, timm_safetensors):
    return tmp_path / "nope.pth", {}, r"no such file"


def _case_directory(tmp_path, official_pth, timm_safetensors):
    return tmp_path, {}, r"is a directory"


def _case_empty(tmp_path, official_pth, timm_safetensors):
    (tmp_path / "empty.pth").write_bytes(b"")
    return tmp_path / "empty.pth", {}, r"empty file"


def _case_text(tmp_path, official_pth, timm_safetensors):
    (tmp_path / "notes.pth").write_text("these are not weights\n")
    return tmp_path / "notes.pth", {}, r"not a checkpoint"


def _case_truncated_pth(tmp_path, official_pth, timm_safetensors):
    return _truncated(official_pth, tmp_path / "cut.pth"), {}, r"truncated or corrupt"


def _case_truncated_safetensors(tmp_path, official_pth, timm_safetensors):
    return _truncated(timm_safetensors, tmp_path / "cut.safetensors"), {}, r"truncated or corrupt"


def _case_a_tensor(tmp_path, official_pth, timm_safetensors):
    return _saved(tmp_path, torch.zeros(3)), {}, r"holds a Tensor, not a state dict"


def _case_no_state_dict(tmp_path, official_pth, timm_safetensors):
    return _saved(tmp_path, {"epoch": 3, "note": "hi"}), {}, r"no state dict found.*'epoch'"


def _case_not_shvit(tmp_path, official_pth, timm_safetensors):
    return _saved(tmp_path, {"fc.weight": torch.zeros(2, 2)}), {}, \
        r"not a state dict of any known model family.*SHViT: mixer\.m\.pre_norm with blocks1\.\.3.*fc\.weight"


def _case_wrong_variant(tmp_path, official_pth, timm_safetensors):
    return official_pth, {"variant": "shvit_s3"}, r"is shvit_s1, not shvit_s3"


def _case_missing_keys(tmp_path, official_pth, timm_safetensors):
    def edit(state):
        del state["blocks2.3.mixer.m.qkv.c.weight"]
    return _edited(tmp_path, official_pth, edit), {}, r"missing keys \(1\): blocks2\.3\.mixer\.m\.qkv\.c\.weight"


def _case_unexpected_keys(tmp_path, official_pth, timm_safetensors):
    def edit(state):
        state["blocks1.0.extra.weight"] = torch.zeros(3)
    return _edited(tmp_path, official_pth, edit), {}, r"unexpected keys \(1\): blocks1\.0\.extra\.weight"


def _case_shape_mismatch(tmp_path, official_pth, timm_safetensors):
    def edit(state):
        state["patch_embed.0.c.weight"] = torch.zeros(16, 3, 5, 5)
    return _edited(tmp_path, official_pth, edit), {"variant": "shvit_s1"}, \
        r"shape mismatches \(1\): patch_embed\.0\.c\.weight is \[16, 3, 5, 5\] in the checkpoint, \[16, 3, 3, 3\]"


def _case_no_ema(tmp_path, official_pth, timm_safetensors):
    return official_pth, {"use_ema": True}, r"no model_ema"


BAD_CASES = {f.__name__[len("_case_"):]: f for f in (
    _case_missing, _case_directory, _case_empty, _case_text, _case_truncated_pth, _case_truncated_safetensors,
    _case_a_tensor, _case_no_state_dict, _case_not_shvit, _case_wrong_variant, _case_missing_keys,
    _case_unexpected_keys, _case_shape_mismatch, _case_no_ema)}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_checkpoint_gives_one_clear_error(tmp_path, official_pth, timm_safetensors, case):
    path, kwargs, pattern = BAD_CASES[case](tmp_path, official_pth, timm_safetensors)
    with pytest.raises(CheckpointError, match=pattern) as err:
        shvit_edge.load_checkpoint(path, **kwargs)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_checkpoint_on_the_cli_is_exit_2_without_traceback(tmp_path, official_pth, timm_safetensors, case):
    path, kwargs, pattern = BAD_CASES[case](tmp_path, official_pth, timm_safetensors)
    args = ["inspect", str(path)]
    if "variant" in kwargs:
        args += ["--variant", kwargs["variant"]]
    if kwargs.get("use_ema"):
        args += ["--ema"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert result.output.startswith("Error: ") and str(path) in result.output


def test_a_shape_mismatch_without_variant_names_the_closest_variant(tmp_path, official_pth):
    path, _, _ = _case_shape_mismatch(tmp_path, official_pth, None)
    with pytest.raises(CheckpointError, match=r"does not match any SHViT variant.*closest, shvit_s1.*patch_embed"):
        shvit_edge.load_checkpoint(path)


def test_unknown_variant_is_a_usage_error(official_pth):
    with pytest.raises(UsageError, match="unknown variant"):
        shvit_edge.load_checkpoint(official_pth, variant="shvit_s7")
