"""Fast unit tests of reparameterization, atomic outputs and strict reading, written against the mutants
``benchmarks/mutation.py`` found surviving (issue 13). Each asserts behaviour: outputs, errors and their messages,
files left on disk. A tiny SHViT (16/32/48 channels, one block per stage) keeps the model tests in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

import pytest

from shvit_edge.bounds import DIMENSION, FRACTION
from shvit_edge.errors import CheckFailed
from shvit_edge.models.reparam import reparameterize
from shvit_edge.models.shvit import SHViT

from conftest import assert_reacts


@torch.no_grad()
def tiny(seed: int = 0, distillation: bool = False) -> SHViT:
    """Random fan-in scaled weights, random norm affines and BatchNorm statistics (no residual branch is zero,
    so every fusion rule is exercised), without :func:`conftest.randomize`'s calibration passes."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SHViT(embed_dim=(16, 32, 48), depth=(1, 1, 1), partial_dim=(8, 8, 16), qk_dim=(8, 8, 8),
                      types=("i", "s", "s"), num_classes=10, distillation=distillation)
    for name, p in model.named_parameters():
        if p.ndim > 1:
            p.copy_(torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5)
        else:
            p.copy_((0.5 + torch.rand(p.shape, generator=gen)) if name.endswith("weight")
                    else 0.1 * torch.randn(p.shape, generator=gen))
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:  # statistics measured on one batch, then perturbed so they match no batch exactly
        m.reset_running_stats()
        m.momentum = None
    model.train()(torch.randn(4, 3, 64, 64, generator=gen))
    for m in norms:
        m.momentum = 0.1
        m.running_var.mul_(0.8 + 0.4 * torch.rand(m.running_var.shape, generator=gen))
        m.running_mean.add_(0.1 * torch.randn(m.running_mean.shape, generator=gen) * m.running_var.sqrt())
    return model.eval()


def inputs(n: int = 4, side: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


# --- reparam ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("distillation", [False, True])
@torch.no_grad()
def test_the_fused_copy_computes_the_same_function_without_batchnorm(distillation):
    model = tiny(distillation=distillation)
    assert_reacts(model, inputs())
    model.train()  # reparameterize works on a copy in eval mode whatever the input's mode
    fused = reparameterize(model)
    assert model.training and not fused.training and fused is not model
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())  # the input is untouched
    x = inputs()
    torch.testing.assert_close(fused(x), model.eval()(x), rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_input_std_is_folded_into_the_first_conv():
    model = tiny(seed=2).eval()
    std = (0.2, 0.5, 0.9)
    fused = reparameterize(model, input_std=std)
    x = inputs()
    s = torch.tensor(std)[None, :, None, None]
    torch.testing.assert_close(fused(x), model(x / s), rtol=1e-4, atol=1e-4)
    # without input_std nothing is folded
    torch.testing.assert_close(reparameterize(model)(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("std,message", [((0.2, 0.2), r"input_std needs 3 positive values, got \[0.2, 0.2\]"),
                                         ((0.2, 0.0, 0.3), "input_std needs 3 positive values"),
                                         ((0.2, -1.0, 0.3), "input_std needs 3 positive values")])
def test_a_bad_input_std_is_refused(std, message):
    with pytest.raises(ValueError, match=message):
        reparameterize(tiny(), input_std=std)


def test_input_std_needs_a_dense_first_conv():
    with pytest.raises(ValueError, match="no dense first conv"):
        reparameterize(nn.Sequential(nn.Conv2d(3, 3, 3, groups=3), nn.Conv2d(3, 3, 1)), input_std=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="no dense first conv"):
        reparameterize(nn.Sequential(nn.Linear(3, 3)), input_std=(1.0, 1.0, 1.0))


def test_reparameterize_takes_a_module():
    with pytest.raises(TypeError, match="reparameterize takes an nn.Module, not dict"):
        reparameterize({})


@pytest.mark.parametrize("extra", [1, 5, 6])
def test_leftover_batchnorms_are_named_up_to_five(extra):
    model = tiny()
    names = [f"extra{i}" for i in range(extra)]
    for name in names:
        setattr(model, name, nn.BatchNorm2d(4))
    with pytest.raises(CheckFailed) as caught:
        reparameterize(model)
    message = str(caught.value)
    assert message.startswith(f"reparameterization left {extra} BatchNorm layer(s) unfused: ")
    assert message.endswith(", ".join(names[:5]) + (" ..." if extra > 5 else "")), message


# --- atomic -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,problem", [
    ("", "is empty or a folder reference"), (".", "is empty or a folder reference"),
    ("..", "is empty or a folder reference"), ("a/b", "holds a path separator or NUL"),
    ("a\\b", "holds a path separator or NUL"), ("a\0b", "holds a path separator or NUL"),
    ("a..b", "holds '..'"), (".shvit-edge-tmp-1-x", "starts with .shvit-edge-tmp-"),
    ("a\x1fb", "holds a control character"), ("é" * 128, "is longer than 255 bytes"),
])
def test_child_path_refuses_anything_but_a_plain_name(tmp_path, name, problem):
    from shvit_edge.atomic import child_path
    from shvit_edge.errors import UsageError

    with pytest.raises(UsageError) as caught:
        child_path(tmp_path, name, what="label")
    assert str(caught.value) == f"the label name {name!r} {problem}: it must be a plain file name inside {tmp_path}"


def test_child_path_names_an_artifact_by_default(tmp_path):
    from shvit_edge.atomic import child_path
    from shvit_edge.errors import UsageError

    with pytest.raises(UsageError, match="^the artifact name '' is empty"):
        child_path(tmp_path, "")


@pytest.mark.parametrize("name", ["a" * 255, "é" * 127 + "a", "x y.onnx", "a.b", " ", "~"])
def test_child_path_takes_a_plain_name(tmp_path, name):
    from shvit_edge.atomic import child_path

    assert child_path(tmp_path, name) == tmp_path / name
    assert child_path(str(tmp_path), name) == tmp_path / name


def test_temporaries_are_named_by_pid_namespace_and_tag(tmp_path):
    import os
    import re

    from shvit_edge import atomic

    tmp = atomic.temporary_path(tmp_path / "model.onnx", "old-")
    assert tmp.parent == tmp_path
    assert re.fullmatch(re.escape(atomic.TMP_PREFIX) + rf"{os.getpid()}\.[0-9a-f]{{12}}-old-model\.onnx", tmp.name)
    match = atomic._TMP_RE.match(tmp.name)
    assert match and match.group(1) == str(os.getpid()) and match.group(2) == atomic._namespace_id()
    assert atomic._namespace_id() == atomic._NAMESPACE
    plain = atomic.temporary_path(tmp_path / "model.onnx")
    assert plain.name == f"{atomic.TMP_PREFIX}{os.getpid()}.{atomic._NAMESPACE}-model.onnx"


def test_stale_temporaries_go_by_pid_here_and_by_age_elsewhere(tmp_path):
    import os
    import subprocess
    import sys
    import time

    from shvit_edge import atomic

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)
    ns, prefix = atomic._NAMESPACE, atomic.TMP_PREFIX
    mine = tmp_path / f"{prefix}{os.getpid()}.{ns}-a.onnx"
    gone = tmp_path / f"{prefix}{dead}.{ns}-b.onnx"
    gone_folder = tmp_path / f"{prefix}{dead}.{ns}-c.mlpackage"
    foreign_new = tmp_path / f"{prefix}{dead}.000000000000-d.onnx"
    foreign_old = tmp_path / f"{prefix}{os.getpid()}-e.onnx"  # an old version's: no namespace
    other = tmp_path / "model.onnx"
    for path in (mine, gone, foreign_new, foreign_old, other):
        path.write_bytes(b"x")
    gone_folder.mkdir()
    (gone_folder / "inside").write_bytes(b"x")
    day = time.time() - atomic.FOREIGN_STALE_SECONDS - 60
    os.utime(foreign_old, (day, day))
    removed = atomic.remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([gone, gone_folder, foreign_old])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (mine, foreign_new, other))
    assert atomic.remove_stale_temporaries(tmp_path / "missing") == []
    assert atomic.remove_stale_temporaries(other) == []


def test_the_namespace_id_without_proc_is_still_12_hex_digits(monkeypatch):
    import os
    import re
    from pathlib import Path

    from shvit_edge import atomic

    def unreadable(*args, **kwargs):
        raise OSError("no /proc")

    monkeypatch.setattr(Path, "read_text", unreadable)
    monkeypatch.setattr(os, "readlink", unreadable)
    assert re.fullmatch("[0-9a-f]{12}", atomic._namespace_id())


def test_alive():
    import os
    import subprocess
    import sys

    from shvit_edge.atomic import _alive

    # a child of this test's own, never another process: a broken _alive could send it a real signal
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert _alive(os.getpid()) and _alive(child.pid)
        with pytest.raises(subprocess.TimeoutExpired):  # asking sends no signal: the child still runs
            child.wait(timeout=0.3)
    finally:
        child.kill()
        child.wait()
    assert not _alive(child.pid)
    assert not _alive(2 ** 22 + 12345)  # above the kernel's pid_max: no such process


def test_outputs_publish_in_order_and_replace_a_folder_only_with_overwrite(tmp_path):
    from shvit_edge.atomic import TMP_PREFIX, atomic_outputs

    folder, manifest = tmp_path / "m.mlpackage", tmp_path / "m.json"
    folder.mkdir()
    (folder / "old").write_text("old")
    with pytest.raises(FileExistsError) as caught:
        with atomic_outputs(folder, manifest) as (tmp_folder, tmp_manifest):
            tmp_folder.mkdir()
            tmp_manifest.write_text("{}")
    assert str(caught.value) == str(folder)  # the error names the file that exists
    assert (folder / "old").exists() and not manifest.exists()
    assert not any(p.name.startswith(TMP_PREFIX) for p in tmp_path.iterdir())
    with atomic_outputs(folder, manifest, overwrite=True) as (tmp_folder, tmp_manifest):
        tmp_folder.mkdir()
        (tmp_folder / "new").write_text("new")
        tmp_manifest.write_text("{}")
    assert sorted(p.name for p in folder.iterdir()) == ["new"] and manifest.read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.mlpackage"]


def test_nothing_written_fails_and_a_leftover_temporary_is_cleared_first(tmp_path):
    from shvit_edge.atomic import atomic_outputs, temporary_path

    final = tmp_path / "a.onnx"
    temporary_path(final).write_text("left over")
    with pytest.raises(FileNotFoundError, match="nothing was written to"):
        with atomic_outputs(final) as (tmp,):
            assert not tmp.exists()
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_a_symlink_not_its_target(tmp_path):
    from shvit_edge.atomic import atomic_outputs

    target = tmp_path / "target"
    target.mkdir()
    link = tmp_path / "a.mlpackage"
    link.symlink_to(target)
    with atomic_outputs(link, overwrite=True) as (tmp,):
        tmp.write_text("new")
    assert not link.is_symlink() and link.read_text() == "new" and target.is_dir()


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_in_the_block_raises_and_a_swallowed_one_still_stops_it(sig):
    import os
    import signal

    from shvit_edge import atomic

    signum = getattr(signal, sig)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt) as caught:
        with atomic.sigterm_as_interrupt():
            os.kill(os.getpid(), signum)
            for _ in range(1000):  # the handler runs between bytecodes
                pass
    assert isinstance(caught.value, atomic.Terminated) == (sig == "SIGTERM")
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert atomic._stop_requested is None
    with pytest.raises(KeyboardInterrupt) as caught:
        with atomic.sigterm_as_interrupt():
            try:
                os.kill(os.getpid(), signum)
                for _ in range(1000):
                    pass
            except KeyboardInterrupt:
                pass  # a library swallowed it
            assert atomic._stop_requested == signum
    assert isinstance(caught.value, atomic.Terminated) == (sig == "SIGTERM")
    assert atomic._stop_requested is None
    with atomic.sigterm_as_interrupt():  # a block without a signal ends normally
        pass


def test_sha256_of_a_file_and_of_a_folder_by_its_documented_framing(tmp_path):
    import hashlib

    from shvit_edge.atomic import sha256_of, size_of

    big = bytes(range(256)) * 5000  # more than one read chunk
    file = tmp_path / "f.bin"
    file.write_bytes(big)
    assert sha256_of(file) == hashlib.sha256(big).hexdigest() and size_of(file) == len(big)
    folder = tmp_path / "p.mlpackage"
    (folder / "Data" / "x").mkdir(parents=True)
    files = {"b.json": b"{}", "Data/x/model.bin": big, "a": b""}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    expected = hashlib.sha256()
    for name in sorted(files):
        raw = name.encode()
        expected.update(len(raw).to_bytes(8, "big") + raw + len(files[name]).to_bytes(8, "big") + files[name])
    assert sha256_of(folder) == expected.hexdigest()
    assert size_of(folder) == sum(map(len, files.values()))


def test_sha256_refuses_what_is_not_a_regular_file(tmp_path):
    import os

    from shvit_edge.atomic import sha256_of
    from shvit_edge.errors import InputError

    with pytest.raises(InputError) as caught:
        sha256_of(tmp_path / "missing")
    assert str(caught.value) == f"{tmp_path / 'missing'}: cannot read (No such file or directory)"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        sha256_of(fifo)
    folder = tmp_path / "p.mlpackage"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "link").symlink_to(tmp_path / "fifo")
    with pytest.raises(InputError) as caught:
        sha256_of(folder)
    assert str(caught.value) == (f"{folder}: holds sub/link, which is not a regular file or folder (a symlink, FIFO "
                                 "or device is no part of an artifact)")
    (folder / "sub" / "link").unlink()
    (folder / "sub" / "dirlink").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(InputError, match="holds sub/dirlink"):
        sha256_of(folder)


# --- _strict ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Inner:
    share: float = field(metadata=FRACTION.meta)
    label: str = "x"


@dataclass(frozen=True)
class Outer:
    name: str
    shape: tuple[int, ...] = field(default=(), metadata=DIMENSION.meta)
    pair: tuple[int, str] = (0, "")
    inner: Inner | None = None
    table: dict[str, Inner] = field(default_factory=dict)
    raw: dict = field(default_factory=dict)
    count: int = 0
    ratio: float = 0.0
    flag: bool = False


def test_from_mapping_builds_nested_dataclasses_and_converts_integers_to_floats(tmp_path):
    from shvit_edge._strict import from_mapping

    data = {"name": "n", "shape": [1, 3], "pair": [2, "b"], "inner": {"share": 1}, "table": {"k": {"share": 0.5}},
            "raw": {"any": [1]}, "count": 3, "ratio": 2, "flag": True}
    got = from_mapping(Outer, data, tmp_path / "f.json")
    assert got == Outer(name="n", shape=(1, 3), pair=(2, "b"), inner=Inner(share=1.0), table={"k": Inner(0.5)},
                        raw={"any": [1]}, count=3, ratio=2.0, flag=True)
    assert type(got.ratio) is float and type(got.inner.share) is float
    assert from_mapping(Outer, {"name": "n", "inner": None}, tmp_path) == Outer(name="n")
    assert from_mapping(Outer, {"name": "n", "count": 1}, tmp_path, exclude=("flag",)).count == 1


@pytest.mark.parametrize("data,message", [
    ([], "f.json: the top level must be a table/object"),
    ({"name": "n", "nope": 1}, "f.json: unknown key 'nope' in the top level (allowed: name, shape, pair, inner, table, "
                               "raw, count, ratio, flag)"),
    ({}, "f.json: missing key 'name' in the top level"),
    ({"name": 1}, "f.json: name must be str, not int"),
    ({"name": "n", "count": True}, "f.json: count must be int, not bool"),
    ({"name": "n", "ratio": False}, "f.json: ratio must be float, not bool"),
    ({"name": "n", "count": 1.0}, "f.json: count must be int, not float"),
    ({"name": "n", "ratio": float("nan")}, "f.json: ratio must be a finite number, not nan"),
    ({"name": "n", "ratio": 10 ** 400}, "f.json: ratio must be a finite number, got an integer of 1329 bits"),
    ({"name": "n", "shape": (1,)}, "f.json: shape must be a list"),
    ({"name": "n", "shape": [1, 0]}, "f.json: shape[1] "),
    ({"name": "n", "pair": [1]}, "f.json: pair must have 2 entries"),
    ({"name": "n", "pair": [1, 2]}, "f.json: pair[1] must be str, not int"),
    ({"name": "n", "shape": [1, "a"]}, "f.json: shape[1] must be int, not str"),
    ({"name": "n", "inner": {"share": 2}}, "f.json: inner.share "),
    ({"name": "n", "inner": {}}, "f.json: missing key 'share' in [inner]"),
    ({"name": "n", "inner": {"share": 1, "x": 1}}, "f.json: unknown key 'x' in [inner] (allowed: share, label)"),
    ({"name": "n", "table": []}, "f.json: table must be a table/object"),
    ({"name": "n", "table": {"k": {"share": -1}}}, "f.json: table.k.share "),
    ({"name": "n", "table": {"a b": {"share": -1}}}, "f.json: table.'a b'.share "),
    ({"name": "n", "table": {1: {"share": 1}}}, "f.json: table.1: keys must be str"),
    ({"name": "n", "raw": [1]}, "f.json: raw must be a table/object"),
])
def test_from_mapping_refuses_by_file_and_key(tmp_path, data, message):
    from shvit_edge._strict import from_mapping
    from shvit_edge.errors import InputError

    with pytest.raises(InputError) as caught:
        from_mapping(Outer, data, tmp_path / "f.json")
    text = str(caught.value)
    assert text.startswith(f"{tmp_path}/{message}") if message.endswith(" ") else text == f"{tmp_path}/{message}"
    assert "\n" not in text


def test_a_bounds_problem_of_a_huge_integer_is_shortened(tmp_path):
    from shvit_edge._strict import from_mapping
    from shvit_edge.errors import InputError

    with pytest.raises(InputError) as caught:
        from_mapping(Outer, {"name": "n", "shape": [10 ** 300]}, tmp_path / "f.json")
    text = str(caught.value)
    assert text.startswith(f"{tmp_path}/f.json: shape[0] ") and text.endswith("...")
    assert len(text) - len(f"{tmp_path}/f.json: shape[0] ") == 200


def test_key_names_and_quoting():
    from shvit_edge._strict import key_name, quoted

    assert key_name("a-b_C9") == "a-b_C9" and key_name("a" * 64) == "a" * 64
    assert key_name("a" * 65) == repr("a" * 65)
    assert key_name("a b") == "'a b'" and key_name("") == "''" and key_name(3) == "3" and key_name("a\n") == "'a\\n'"
    assert quoted("x" * 78) == repr("x" * 78) and len(quoted("x" * 79)) == 80 and quoted("x" * 79).endswith("...")


@pytest.mark.parametrize("data,message", [
    ({"a": [1, {"b": float("inf")}]}, "a[1].b must be a finite number, not inf"),
    ([{"x": float("nan")}], "[0].x must be a finite number, not nan"),
    ({"a b": {"c": -float("inf")}}, "'a b'.c must be a finite number, not -inf"),
    ({"s": "ok", "t": "\ud800"}, "t is not valid Unicode text (a lone surrogate)"),
    ({"a": {"\ud800": 1}}, "a key in a is not valid Unicode text (a lone surrogate)"),
    ({"\ud800": 1}, "a key in the top level is not valid Unicode text (a lone surrogate)"),
    ({"X": {"Xy": float("nan")}}, "X.Xy must be a finite number, not nan"),
])
def test_check_tree_names_the_key_of_a_bad_value(tmp_path, data, message):
    from shvit_edge._strict import check_tree
    from shvit_edge.errors import InputError

    with pytest.raises(InputError) as caught:
        check_tree(data, tmp_path / "f.toml")
    assert str(caught.value) == f"{tmp_path / 'f.toml'}: {message}"


def test_check_tree_limits_depth_and_skips_text_checks_when_told(tmp_path):
    from shvit_edge._strict import check_tree
    from shvit_edge.errors import InputError

    def nested(levels):
        data = 1.0
        for _ in range(levels):
            data = {"k": data}
        return data

    check_tree(nested(3), tmp_path, max_depth=3)
    with pytest.raises(InputError, match=r": k\.k\.k is nested more than 3 levels deep"):
        check_tree(nested(4), tmp_path, max_depth=3)
    check_tree({"k": {}, "l": [], "m": [1, 2]}, tmp_path, max_depth=2)
    with pytest.raises(InputError, match=r": m\[0\] is nested more than 2 levels deep"):
        check_tree({"m": [[], {}]}, tmp_path, max_depth=2)  # an empty container counts as a level too
    check_tree({"t": "\ud800", "\ud800": ["\ud800"]}, tmp_path, text=False)
    check_tree(float("nan"), tmp_path)  # a lone scalar is from_mapping's to refuse
    check_tree({"a": [1, "b", None, True, {"c": [2.5]}], "d": {"e": 1}}, tmp_path)
    with pytest.raises(InputError, match=r"d\.e must be a finite number"):
        check_tree({"a": [1, {"c": [2.5]}], "d": {"e": float("nan")}}, tmp_path)  # after a nested container


def test_read_capped_reads_up_to_the_cap_and_refuses_the_rest(tmp_path):
    import os

    from shvit_edge._strict import decode_text, read_capped
    from shvit_edge.errors import InputError

    file = tmp_path / "p.toml"
    file.write_bytes(b"x" * 10)
    assert read_capped(file, 10, "profile") == b"x" * 10
    with pytest.raises(InputError) as caught:
        read_capped(file, 9, "profile")
    assert str(caught.value) == f"{file}: profile is 10 bytes, more than the 9 allowed"
    with pytest.raises(InputError) as caught:
        read_capped(tmp_path, 10, "profile")
    assert str(caught.value) == f"{tmp_path}: profile is not a regular file"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="profile is not a regular file"):
        read_capped(fifo, 10, "profile")
    with pytest.raises(InputError) as caught:
        read_capped(tmp_path / "missing", 10, "manifest")
    assert str(caught.value) == f"{tmp_path / 'missing'}: cannot read manifest (No such file or directory)"
    assert decode_text("a\r\nb\rc\n".encode()) == "a\nb\nc\n"
    with pytest.raises(UnicodeDecodeError):
        decode_text(b"\xff")
