"""The model family registry: a contract every registered family keeps, and a family defined in this file alone
(registered by a fixture, no module of shvit_edge edited for it) that goes through load_source, export, verify
and bench with the library API."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn as nn

from shvit_edge.errors import CheckpointError, UsageError
from shvit_edge.export import ExportOptions, export, resolve_targets
from shvit_edge.manifest import manifest_path, read_manifest
from shvit_edge.models.checkpoint import load_checkpoint
from shvit_edge.models.family import ModelFamily
from shvit_edge.models.registry import (families, find_family, get_family, measure, register_family,
                                        resolve_variant, unregister_family)
from shvit_edge.models.source import load_source

RES = (64, 64)
ATOL = 1e-4


# ------------------------------------------------------------------------------------------ a fake family


class TinyNet(nn.Module):
    """A conv with a BatchNorm, a ReLU, global pooling and a linear head."""

    def __init__(self, width: int, num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.act(self.bn(self.conv(x)))).flatten(1))


class TinyFamily(ModelFamily):
    """Variants ``tinyfake_a`` and ``tinyfake_b``; checkpoints in the model's own keys (``tiny``) or in a
    ``legacy`` layout (``net.`` prefix, ``classifier`` for the head)."""

    name = "tinyfake"
    title = "TinyFake"
    mean = (0.5, 0.5, 0.5)
    std = (0.25, 0.2, 0.3)
    crop_pct = 0.9
    layouts = ("tiny", "legacy")
    layout_hint = "conv.* / fc.* or net.*"
    table_columns = ("width",)
    WIDTHS = {"tinyfake_a": 8, "tinyfake_b": 12}

    def variants(self):
        return self.WIDTHS

    def default_resolution(self, variant: str) -> int:
        return 64

    def describe(self, variant: str) -> dict:
        return {"width": self.WIDTHS[variant], **super().describe(variant)}

    def build(self, variant: str, num_classes: int, distillation: bool):
        if distillation:
            raise UsageError("TinyFake has no distillation head")
        return TinyNet(self.WIDTHS[variant], num_classes)

    def reparameterize(self, model, input_std=None):
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        fused = copy.deepcopy(model).eval()
        fused.conv = fuse_conv_bn_eval(fused.conv, fused.bn)
        fused.bn = nn.Identity()
        if input_std is not None:
            with torch.no_grad():
                fused.conv.weight.div_(torch.tensor(list(input_std))[None, :, None, None])
        return fused

    def detect_layout(self, state):
        if any(k.startswith("net.") for k in state):
            return "legacy"
        if "conv.weight" in state and "fc.weight" in state:
            return "tiny"
        return None

    def to_model_keys(self, state, layout):
        if layout != "legacy":
            return state
        return {k[len("net."):].replace("classifier.", "fc.", 1): v for k, v in state.items()}

    def from_model_keys(self, state, layout):
        if layout != "legacy":
            return state
        return {"net." + k.replace("fc.", "classifier.", 1): v for k, v in state.items()}

    def key_namer(self, layout):
        if layout != "legacy":
            return lambda key: key
        return lambda key: "net." + key.replace("fc.", "classifier.", 1)

    def head_facts(self, state):
        return int(state["fc.weight"].shape[0]), False


FAKE = TinyFamily()


@pytest.fixture(scope="module", autouse=True)
def fake_family():
    """TinyFake registered for this module's tests only."""
    register_family(FAKE)
    yield FAKE
    unregister_family(FAKE.name)


def _builtin_variants() -> list:
    return [pytest.param(f.name, v, id=f"{f.name}:{v}") for f in families() for v in f.variants()]


#: every built-in family's variants, and the fake family's (registered by the fixture before each test runs)
ALL_VARIANTS = _builtin_variants() + [pytest.param(FAKE.name, v, id=f"{FAKE.name}:{v}") for v in FAKE.variants()]
#: each family's first (smallest) variant, for the contract tests that export: an export of SepViT-B alone took
#: 100 s, and every variant of a family is the same code with other sizes
FIRST_VARIANTS = [p for i, p in enumerate(ALL_VARIANTS) if i == 0 or p.values[0] != ALL_VARIANTS[i - 1].values[0]]


@torch.no_grad()
def trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BatchNorm statistics, so no branch is zero and fusion is really exercised."""
    from conftest import randomize  # imported here: a bench worker imports this file without the tests folder

    return randomize(model, seed)


# ------------------------------------------------------------------------------------------- contract


def test_registry_lists_the_builtins_first_and_the_fake_family():
    names = [f.name for f in families()]
    assert {"shvit", "efficientvit"} <= set(names) and names[-1] == FAKE.name  # built-ins first (by module name)
    assert get_family("tinyfake") is FAKE
    assert resolve_variant("SHViT-S1") == (get_family("shvit"), "shvit_s1")
    assert resolve_variant("tinyfake-b") == (FAKE, "tinyfake_b")
    with pytest.raises(UsageError, match=r"unknown variant 'nope'.*shvit_s1.*tinyfake_a"):
        resolve_variant("nope")
    with pytest.raises(ValueError, match="already"):
        register_family(type("Clash", (TinyFamily,), {"name": "clash"})())


@pytest.mark.parametrize("family_name,variant", ALL_VARIANTS)
def test_family_contract_create_and_reparameterize(family_name, variant):
    family = get_family(family_name)
    model = family.create(variant, num_classes=10)
    assert model.variant == variant and not model.training
    x = torch.randn(2, 3, *RES, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert model(x).shape == (2, 10)
    trained_like(model)
    before = copy.deepcopy(model.state_dict())
    deploy = family.reparameterize(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "reparameterize changed its input"
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in deploy.modules())
    with torch.no_grad():
        want, got = model(x), deploy(x)
        assert torch.allclose(got, want, atol=ATOL, rtol=1e-4), (got - want).abs().max()
        std = torch.tensor(family.preprocessing(variant)[1])[None, :, None, None]
        folded = family.reparameterize(model, input_std=family.preprocessing(variant)[1])
        assert torch.allclose(folded(x * std), want, atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("family_name,variant", ALL_VARIANTS)
def test_family_contract_checkpoint_layouts_load_back(family_name, variant, tmp_path):
    family = get_family(family_name)
    model = trained_like(family.create(variant, num_classes=7), seed=1)
    state = model.state_dict()
    assert family.layouts, "a family declares at least its own checkpoint layout"
    for layout in family.layouts:
        path = tmp_path / f"{layout}.pth"
        torch.save(family.from_model_keys(dict(state), layout), path)
        loaded = load_checkpoint(path)
        assert (loaded.family, loaded.variant, loaded.num_classes) == (family.name, variant, 7), layout
        assert loaded.extra["key_layout"] == layout
        got = loaded.model.state_dict()
        assert set(got) == set(state)
        assert all(torch.equal(got[k], v) for k, v in state.items()), layout
        loaded_by_name = load_checkpoint(path, variant=variant)
        assert loaded_by_name.variant == variant


@pytest.mark.extras("onnx")
@pytest.mark.parametrize("family_name,variant", FIRST_VARIANTS)
def test_family_contract_params_and_macs_reach_the_manifest(family_name, variant, tmp_path):
    family = get_family(family_name)
    stats = measure(family, variant, resolution=RES)
    assert stats["params"] > 0 and stats["macs"] > 0
    source = load_source(variant=variant, checkpoint=None)
    assert source.family is family
    report = export(source, resolve_targets("onnx"), ExportOptions(resolution=RES), tmp_path, jobs=1)
    (artifact,) = report.artifacts
    manifest = read_manifest(artifact.manifest)
    assert (manifest.family, manifest.params, manifest.macs) == (family.name, stats["params"], stats["macs"])
    mean, std, crop_pct = family.preprocessing(variant)
    pre = manifest.preprocessing
    assert (pre.mean, pre.std, pre.resize) == (tuple(mean), tuple(std), int(RES[0] / crop_pct))


# --------------------------------------------------------------------------- the fake family end to end


def test_unknown_checkpoints_name_every_family(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"something.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(CheckpointError, match=r"not a state dict of any known model family.*SHViT.*TinyFake"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"not an TinyFake state dict"):
        load_checkpoint(path, variant="tinyfake_a")
    wrong = tmp_path / "wrong.pth"
    torch.save({"net.conv.weight": torch.zeros(5, 3, 3, 3), "net.classifier.weight": torch.zeros(2, 5)}, wrong)
    with pytest.raises(CheckpointError, match=r"does not match any TinyFake variant .*net\.conv\.weight"):
        load_checkpoint(wrong)


@pytest.mark.extras("onnx")
def test_fake_family_through_export_verify_and_bench(tmp_path):
    from shvit_edge.bench import BenchOptions, bench
    from shvit_edge.verify import VerifyOptions, verify

    untrained = load_source(variant="tinyfake_a", checkpoint=None, seed=3)
    assert untrained.family is FAKE and untrained.untrained and untrained.num_classes == 1000
    ckpt = tmp_path / "tiny_b.pth"
    model = trained_like(FAKE.create("tinyfake_b", num_classes=5), seed=2)
    torch.save({"model": FAKE.from_model_keys(model.state_dict(), "legacy"), "epoch": 3}, ckpt)
    trained = load_source(variant=None, checkpoint=str(ckpt))
    assert (trained.family, trained.variant, trained.num_classes) == (FAKE, "tinyfake_b", 5)
    assert trained.checkpoint.layout == "legacy" and trained.labels_source == "indices"

    out = tmp_path / "out"
    for source in (untrained, trained):
        report = export(source, resolve_targets("onnx"), ExportOptions(resolution=RES), out, jobs=1)
        assert not report.failures and len(report.artifacts) == 1
    manifests = {m.variant: m for m in (read_manifest(p) for p in out.glob("*.json"))}
    assert set(manifests) == {"tinyfake_a", "tinyfake_b"}
    for manifest in manifests.values():
        assert manifest.family == "tinyfake" and manifest.preprocessing.mean == FAKE.mean
        assert manifest.preprocessing.std == FAKE.std and manifest.preprocessing.resize == int(64 / 0.9)
        assert manifest.macs == measure(FAKE, manifest.variant, manifest.num_classes, RES)["macs"]

    results = verify([out], VerifyOptions(samples=4))
    assert len(results) == 2 and {r.status for r in results} == {"pass"}, [r.as_json() for r in results]
    assert all(r.metrics for r in results)

    doc = bench([out], BenchOptions(iterations=4, rounds=2, warmup=1)).as_json()
    assert doc["failures"] == [], doc["failures"]
    assert len(doc["results"]) == 2 and len(doc["baselines"]) == 2
    for row in doc["results"] + doc["baselines"]:
        assert row["macs_per_image"] == manifests[row["variant"]].macs
    json.dumps(doc)


@pytest.mark.extras("onnx")
def test_an_old_manifest_without_family_params_or_macs_still_reads_and_benches(tmp_path):
    """A manifest from before families: SHViT's, and bench measures the MACs on the family's model."""
    from shvit_edge.bench import BenchOptions, plan

    source = load_source(variant="shvit_s1", checkpoint=None)
    (artifact,) = export(source, resolve_targets("onnx"), ExportOptions(resolution=RES), tmp_path, jobs=1).artifacts
    doc = json.loads(artifact.manifest.read_text())
    recorded = doc.pop("macs")
    del doc["family"], doc["params"]
    artifact.manifest.write_text(json.dumps(doc))
    manifest = read_manifest(manifest_path(artifact.path))
    assert (manifest.family, manifest.params, manifest.macs) == ("shvit", None, None)
    candidates, _ = plan([tmp_path], BenchOptions())
    assert {c.macs for c in candidates} == {recorded}
    assert find_family(manifest.family).name == "shvit"
