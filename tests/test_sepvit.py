"""SepViT (the ``sepvit`` family): sizes against the paper, the authors' checkpoint layout against an independent
plain-PyTorch forward written here from the raw state dict, the resolution rule, and one export of Lite to every
target.

The reference (:func:`reference_forward`) reads the authors' keys literally (``patch_embeds.i.proj``,
``blocks.i.j.attn.DSA_qkv``, ``blocks.i.j.win_tokens``, ``pos_block.i.proj.0``, ``head``, ...) and uses only
``torch.nn.functional`` (and einsum for the attention, not the model's reshapes): a key the family names
differently is a KeyError there, a key it leaves unused fails the test. The heads per stage are not in the state
dict's shapes: they are copied here from the authors' ``classification/sepvit.py``, as are the LayerNorms' eps
(1e-6 for ``norm1``, ``norm2`` and ``norm``, their ``norm_layer``; 1e-5 for the patch embeddings' and the window
tokens' plain ``nn.LayerNorm``).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from shvit_edge.errors import UsageError
from shvit_edge.models.checkpoint import load_checkpoint
from shvit_edge.models.registry import families, get_family, measure, resolve_variant

FAMILY = get_family("sepvit")
VARIANTS = list(FAMILY.variants())
ATOL = 1e-4

#: the paper's table (Li et al. 2022, Table 1; repeated in liwei109/SepViT's readme.md), ImageNet-1k, 224: params
#: (M) and FLOPs (G). Lite is not in the table: its numbers are what the authors' get_flops.py prints for their
#: SepViT_Lite config. get_flops.py counts with fvcore's FlopCountAnalysis: one "flop" per multiply-add of every
#: conv, linear and attention matmul, plus 5 per element of every LayerNorm (fvcore's norm estimate); GELU,
#: softmax and the mean are not counted. ``measure`` counts the fused model with torch's FlopCounterMode (the same
#: multiply-adds; no LayerNorm term) and its parameters. The differences, line by line, all well inside 2%:
#: - LayerNorm: fvcore adds 5 per normalised element (T 2.90M elements: +14.5M); the fused model's LayerNorms
#:   take their channel means as Linears with weights 1/C, which FlopCounterMode counts (2 MACs per element).
#: - window tokens: the fused model computes their norm1 and DSA_qkv rows once (constants), so those MACs and
#:   the 64/20/12 (T) window tokens' parameters leave the count; the final norm's and each norm2's affine are
#:   folded into the next Linear (2*C parameters less each).
#: So the training form has exactly the table's parameters (T 31.183M, S 46.571M, B 82.377M, Lite 3.661M) and
#: fvcore's count of it would be T 4.534G, S 7.476G, B 13.082G, Lite 0.573G (training-form MACs plus 5 x the
#: LayerNorm elements), which the table rounds to 4.5, 7.5 and 13.1.
PAPER = {
    "sepvit_lite": (3.66, 0.57),  # measured 3.653M (-0.2%), 0.5693G (-0.1%)
    "sepvit_t": (31.2, 4.5),      # 31.158M (-0.1%), 4.5155G (+0.3%)
    "sepvit_s": (46.6, 7.5),      # 46.533M (-0.1%), 7.4471G (-0.7%)
    "sepvit_b": (82.3, 13.1),     # 82.328M (+0.0%), 13.0364G (-0.5%)
}

#: heads per stage, from the authors' SepViT_Lite / _Tiny / _Small / _Base
HEADS = {"sepvit_lite": (1, 2, 4, 8), "sepvit_t": (3, 6, 12, 24), "sepvit_s": (3, 6, 12, 24),
         "sepvit_b": (4, 8, 16, 32)}


@pytest.mark.parametrize("variant", VARIANTS)
def test_params_and_macs_match_the_paper(variant):
    params, gmacs = PAPER[variant]
    stats = measure(FAMILY, variant)
    assert abs(stats["params"] / 1e6 - params) / params < 0.02, stats
    assert abs(stats["macs"] / 1e9 - gmacs) / gmacs < 0.02, stats


def test_variant_names():
    assert VARIANTS == ["sepvit_lite", "sepvit_t", "sepvit_s", "sepvit_b"]
    for spelling, name in (("SepViT-Lite", "sepvit_lite"), ("sepvit-t", "sepvit_t"), ("SepViT_Tiny", "sepvit_t"),
                           ("SEPVIT-S", "sepvit_s"), ("sepvit_small", "sepvit_s"), ("SepViT_Base", "sepvit_b"),
                           (" sepvit_b ", "sepvit_b")):
        assert resolve_variant(spelling) == (FAMILY, name), spelling
    for other in ("t", "tiny", "lite", "sepvit", "sepvit_m"):
        assert FAMILY.normalize(other) is None, other
    assert all(FAMILY.default_resolution(v) == 224 for v in VARIANTS)
    assert FAMILY.preprocessing("sepvit_t") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 0.875)
    facts = FAMILY.describe("sepvit_b")
    assert (facts["embed_dims"], facts["depths"], facts["num_heads"]) == ([128, 256, 512, 1024], [1, 2, 14, 2],
                                                                          [4, 8, 16, 32])
    assert facts["window_sizes"][2] == [7, 14] * 7 and facts["window_grids"][2] == [2, 1] * 7
    assert set(FAMILY.table_columns) <= set(facts)
    with pytest.raises(UsageError, match="no distillation head"):
        FAMILY.create("sepvit_lite", distillation=True)


def test_resolutions_that_do_not_split_into_the_window_grids_are_refused():
    for ok in ((224, 224), (64, 64), (96, 160), (512, 224)):
        FAMILY.check_resolution("sepvit_t", ok)
    for bad in ((80, 80), (224, 240), (112, 224)):
        with pytest.raises(UsageError, match=r"multiple of 32 px.*8x8"):
            FAMILY.check_resolution("sepvit_t", bad)
    model = FAMILY.create("sepvit_lite", num_classes=3)
    with pytest.raises(ValueError, match="8x8 windows"), torch.no_grad():
        model(torch.zeros(1, 3, 80, 80))


# ------------------------------------------------------------------------------------- seeded checkpoints


def authors_keys(variant: str, num_classes: int) -> dict:
    """The authors' state dict's keys and shapes for ``variant``, written out from their SepViT.__init__ (not
    read off the family's model): PatchEmbed(proj, norm), PosCNN(proj.0), SepViTBlock(norm1, attn, norm2, mlp,
    win_tokens where the 224 map has more than one window), SeparableAttention(DSA_qkv, win_tokens_norm, PSA_qk
    with PSA, proj), the final norm and head."""
    spec = FAMILY.variants()[variant]
    keys: dict = {}
    prev = 3
    for i, (dim, depth) in enumerate(zip(spec.embed_dims, spec.depths, strict=True)):
        kernel = 7 if i == 0 else 3
        keys[f"patch_embeds.{i}.proj.weight"] = (dim, prev, kernel, kernel)
        keys[f"patch_embeds.{i}.proj.bias"] = (dim,)
        keys[f"patch_embeds.{i}.norm.weight"] = keys[f"patch_embeds.{i}.norm.bias"] = (dim,)
        keys[f"pos_block.{i}.proj.0.weight"] = (dim, 1, 3, 3)
        keys[f"pos_block.{i}.proj.0.bias"] = (dim,)
        for j in range(depth):
            p = f"blocks.{i}.{j}"
            win_num = ((224 // 4 // 2 ** i) // spec.window_sizes[i][j]) ** 2
            for norm in ("norm1", "norm2"):
                keys[f"{p}.{norm}.weight"] = keys[f"{p}.{norm}.bias"] = (dim,)
            keys[f"{p}.attn.DSA_qkv.weight"], keys[f"{p}.attn.DSA_qkv.bias"] = (3 * dim, dim), (3 * dim,)
            if win_num > 1:
                keys[f"{p}.win_tokens"] = (1, win_num, 1, dim)
                keys[f"{p}.attn.win_tokens_norm.weight"] = keys[f"{p}.attn.win_tokens_norm.bias"] = (dim,)
                keys[f"{p}.attn.PSA_qk.weight"], keys[f"{p}.attn.PSA_qk.bias"] = (2 * dim, dim), (2 * dim,)
            keys[f"{p}.attn.proj.weight"], keys[f"{p}.attn.proj.bias"] = (dim, dim), (dim,)
            keys[f"{p}.mlp.fc1.weight"], keys[f"{p}.mlp.fc1.bias"] = (4 * dim, dim), (4 * dim,)
            keys[f"{p}.mlp.fc2.weight"], keys[f"{p}.mlp.fc2.bias"] = (dim, 4 * dim), (dim,)
        prev = dim
    keys["norm.weight"] = keys["norm.bias"] = (prev,)
    keys["head.weight"], keys["head.bias"] = (num_classes, prev), (num_classes,)
    return keys


@pytest.mark.parametrize("variant", VARIANTS)
def test_authors_names_are_the_models(variant):
    with torch.device("meta"):
        state = FAMILY.create(variant, num_classes=7).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == authors_keys(variant, 7)


@torch.no_grad()
def seeded_state(variant: str, seed: int, num_classes: int = 10) -> dict:
    """A state dict in the authors' layout from seeded random values: fan-in scaled weights, LayerNorm scales in
    [0.5, 1.5) and biases of 0.1 sigma (no norm is the identity), unit-variance window tokens, the residual
    branches' last Linear (attn.proj, mlp.fc2) at half strength so the random residual stream stays tame."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in authors_keys(variant, num_classes).items():
        if key.endswith("win_tokens"):
            value = torch.randn(shape, generator=gen)
        elif len(shape) > 1:
            value = torch.randn(shape, generator=gen) / math.prod(shape[1:]) ** 0.5
            if key.endswith(("attn.proj.weight", "mlp.fc2.weight")):
                value = value * 0.5
        elif key.endswith("weight"):
            value = 0.5 + torch.rand(shape, generator=gen)
        else:
            value = 0.1 * torch.randn(shape, generator=gen)
        state[key] = value
    return state


# ---------------------------------------------------------------------------- the independent reference


def reference_forward(state: dict, heads: tuple[int, ...], x: torch.Tensor) -> torch.Tensor:
    """SepViT's forward in eval mode from the authors' state dict, with torch.nn.functional only.

    The stages and depths are read off the keys; a block has window tokens iff ``blocks.i.j.win_tokens`` exists,
    and its grid of windows is the square root of their count. At 224 the windows are the authors' ws x ws; at
    another size the grid stays and the windows are the map / grid (the family's rule for other resolutions)."""
    used: set[str] = set()

    def t(key):
        used.add(key)
        return state[key]

    def layer_norm(x, p, eps):
        return F.layer_norm(x, x.shape[-1:], t(f"{p}.weight"), t(f"{p}.bias"), eps)

    def linear(x, p):
        return F.linear(x, t(f"{p}.weight"), t(f"{p}.bias"))

    def dsa(x, p, nh):
        """Multi-head attention within each window of (B, windows, T, C), plus the input as shortcut."""
        b, wn, n, c = x.shape
        hd = c // nh
        qkv = linear(x, f"{p}.DSA_qkv").reshape(b, wn, n, 3, nh, hd)
        q, k, v = qkv[:, :, :, 0], qkv[:, :, :, 1], qkv[:, :, :, 2]  # (B, windows, T, heads, hd)
        attn = (torch.einsum("bwthd,bwshd->bwhts", q, k) * hd ** -0.5).softmax(dim=-1)
        return torch.einsum("bwhts,bwshd->bwthd", attn, v).reshape(b, wn, n, c) + x

    def psa(tokens, feats, p, nh):
        """Attention across windows: the tokens (B, windows, C) give the weights, the maps (B, windows, T, C)
        the values, mixed per head."""
        b, wn, n, c = feats.shape
        hd = c // nh
        tokens = F.gelu(layer_norm(tokens, f"{p}.win_tokens_norm", 1e-5))
        qk = linear(tokens, f"{p}.PSA_qk").reshape(b, wn, 2, nh, hd)
        attn = (torch.einsum("bwhd,bvhd->bhwv", qk[:, :, 0], qk[:, :, 1]) * hd ** -0.5).softmax(dim=-1)
        values = feats.reshape(b, wn, n, nh, hd)
        return torch.einsum("bhwv,bvnhd->bwnhd", attn, values).reshape(b, wn, n, c) + feats

    stages = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("patch_embeds."))
    for i in range(stages):
        weight = t(f"patch_embeds.{i}.proj.weight")
        x = F.conv2d(x, weight, t(f"patch_embeds.{i}.proj.bias"), 4 if i == 0 else 2, weight.shape[-1] // 2)
        b, c, h, w = x.shape
        x = layer_norm(x.flatten(2).transpose(1, 2), f"patch_embeds.{i}.norm", 1e-5)
        depth = 1 + max(int(k.split(".")[2]) for k in state if k.startswith(f"blocks.{i}."))
        for j in range(depth):
            p = f"blocks.{i}.{j}"
            if f"{p}.win_tokens" in state:
                tokens = t(f"{p}.win_tokens")
                g = math.isqrt(tokens.shape[1])
                wh, ww = h // g, w // g
                windows = x.reshape(b, g, wh, g, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b, g * g, wh * ww, c)
                out = dsa(layer_norm(torch.cat([tokens.expand(b, -1, -1, -1), windows], 2), f"{p}.norm1", 1e-6),
                          f"{p}.attn", heads[i])
                out = psa(out[:, :, 0], out[:, :, 1:], f"{p}.attn", heads[i])
                out = out.reshape(b, g, g, wh, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h * w, c)
            else:  # one window: the whole map, no token
                out = dsa(layer_norm(x[:, None], f"{p}.norm1", 1e-6), f"{p}.attn", heads[i])[:, 0]
            x = x + linear(out, f"{p}.attn.proj")
            x = x + linear(F.gelu(linear(layer_norm(x, f"{p}.norm2", 1e-6), f"{p}.mlp.fc1")), f"{p}.mlp.fc2")
            if j == 0:  # the PEG
                fmap = x.transpose(1, 2).reshape(b, c, h, w)
                peg = F.conv2d(fmap, t(f"pos_block.{i}.proj.0.weight"), t(f"pos_block.{i}.proj.0.bias"), 1, 1, 1, c)
                x = (peg + fmap).flatten(2).transpose(1, 2)
        if i < stages - 1:
            x = x.transpose(1, 2).reshape(b, c, h, w)
    logits = linear(layer_norm(x, "norm", 1e-6).mean(dim=1), "head")
    unused = set(state) - used
    assert not unused, sorted(unused)[:5]
    return logits


#: Lite at its own 224 (exactly the authors' function: 8x8 windows of 7, 4x4 of 7 and 2x2 of 14, ...) and at
#: 64x128 (windows of 1x2 .. 4x8); the others at 64 (2x2 windows in stage 1, 1x1 in the 2x2 grids of stage 3),
#: which is quicker
CASES = [("sepvit_lite", (224, 224)), ("sepvit_lite", (64, 128))] + [(v, (64, 64)) for v in VARIANTS[1:]]


@pytest.mark.parametrize("variant,size", CASES)
def test_the_authors_checkpoint_loads_and_matches_the_independent_reference(variant, size, tmp_path):
    state = seeded_state(variant, seed=sum(map(ord, variant)) + size[1])
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(size[0]))
    with torch.no_grad():
        want = reference_forward(state, HEADS[variant], x)
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": state, "optimizer": {}, "epoch": 299}, path)  # the authors' training checkpoint
    loaded = load_checkpoint(path)
    assert (loaded.family, loaded.variant, loaded.num_classes, loaded.distillation) == ("sepvit", variant, 10, False)
    assert (loaded.layout, loaded.extra["key_layout"], loaded.extra["epoch"]) == ("sepvit", "sepvit", 299)
    std = torch.tensor(FAMILY.std)[None, :, None, None]
    with torch.no_grad():
        got = loaded.model(x)
        fused = FAMILY.reparameterize(loaded.model)(x)
        folded = FAMILY.reparameterize(loaded.model, input_std=FAMILY.std)(x * std)
    for name, out in (("training", got), ("deploy", fused), ("std-folded deploy", folded)):
        assert torch.allclose(out, want, atol=ATOL, rtol=1e-4), (name, (out - want).abs().max())
    assert want.std(dim=0).mean() > 100 * ATOL  # the two inputs' logits differ: the comparison has teeth


@pytest.mark.parametrize("mistake", ["transposed proj", "swapped q and k", "window tokens out of order"])
def test_a_layout_mistake_is_caught_by_the_reference(mistake):
    state = seeded_state("sepvit_lite", seed=5)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    wrong = dict(state)
    if mistake == "transposed proj":
        wrong["blocks.2.0.attn.proj.weight"] = state["blocks.2.0.attn.proj.weight"].t()
    elif mistake == "swapped q and k":
        q, k, v = state["blocks.0.0.attn.DSA_qkv.weight"].chunk(3)
        wrong["blocks.0.0.attn.DSA_qkv.weight"] = torch.cat([k, q, v])
    else:
        wrong["blocks.1.0.win_tokens"] = state["blocks.1.0.win_tokens"].flip(1)
    with torch.no_grad():
        assert (reference_forward(state, HEADS["sepvit_lite"], x)
                - reference_forward(wrong, HEADS["sepvit_lite"], x)).abs().max() > 100 * ATOL


def test_the_families_claims_do_not_overlap():
    """Each family's detector refuses the others' state dicts in every layout (SHViT's, EfficientViT's and any
    other registered family's), so which family checkpoint loading asks first does not decide (the built-ins are
    found in module-name order)."""
    others = [f for f in families() if f is not FAMILY]
    assert {"shvit", "efficientvit"} <= {f.name for f in others}
    with torch.device("meta"):
        mine = FAMILY.create("sepvit_lite", num_classes=3).state_dict()
        for other in others:
            theirs = other.create(next(iter(other.variants())), num_classes=3).state_dict()
            for layout in other.layouts:
                assert FAMILY.detect_layout(other.from_model_keys(dict(theirs), layout)) is None, (other.name, layout)
            assert other.detect_layout(mine) is None, other.name
    assert FAMILY.detect_layout(mine) == "sepvit"


# ------------------------------------------------------------------------------------------ export


@pytest.mark.extras("coreml", "executorch", "onnx", "tflite")
def test_lite_exports_to_every_target_and_verifies(tmp_path):
    from shvit_edge.export import ExportOptions, export, resolve_targets
    from shvit_edge.manifest import read_manifest
    from shvit_edge.models.source import load_source
    from shvit_edge.verify import VerifyOptions, verify

    ckpt = tmp_path / "lite.pth"
    torch.save({"model": seeded_state("sepvit_lite", seed=7, num_classes=1000)}, ckpt)
    source = load_source(variant=None, checkpoint=str(ckpt))
    assert (source.family.name, source.variant) == ("sepvit", "sepvit_lite")
    out = tmp_path / "out"
    report = export(source, resolve_targets("coreml,executorch,onnx,tflite"), ExportOptions(resolution=(224, 224)),
                    out, jobs=1)
    assert not report.failures, report.failures
    assert len(report.artifacts) == 4
    for artifact in report.artifacts:
        manifest = read_manifest(artifact.manifest)
        assert (manifest.family, manifest.variant) == ("sepvit", "sepvit_lite")
        if artifact.target == "executorch":
            delegation = manifest.details["delegation"]
            assert delegation["partitions"] == 1 and delegation["ops_outside_total"] == 0, delegation
    results = verify([out], VerifyOptions(samples=4))
    assert results and all(r.status == "pass" for r in results), [r.as_json() for r in results]
