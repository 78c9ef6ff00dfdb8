"""Reading a bundle someone else may have made: every refusal is a one-line input error (exit 2), nothing outside the
bundle is ever read, nothing is stored.

Refusals through the commands (``results ingest`` and ``harness run``) on a real bundle of one ONNX artifact;
property-based tests of the reader (``bundle.json`` rewritten at random, paths of every shape, zip archives with
generated entries) on a tiny bundle made here, whose artifact is a few bytes its manifest describes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from shvit_edge.cli import cli
from shvit_edge.errors import InputError
from shvit_edge.harness.bundle import BUNDLE_JSON, bundle_id, open_bundle, read_bundle, unzip

#: generated cases of this file's property tests (tests/test_property_budget.py adds up every file's)
PROPERTY_EXAMPLES = 1500 + 1000 + 800 + 700


def run(*args):
    return CliRunner().invoke(cli, [*map(str, args)])


def resign(folder: Path) -> None:
    """Recompute the files list's sizes and sha256s and the id after a change, so only the change is wrong."""
    doc = json.loads((folder / BUNDLE_JSON).read_text())
    for entry in doc["files"]:
        path = folder / entry["path"]
        if path.is_file() and not path.is_symlink():
            entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
            entry["size"] = path.stat().st_size
    doc["id"] = bundle_id(doc)
    (folder / BUNDLE_JSON).write_text(json.dumps(doc))


@pytest.fixture(scope="module")
def onnx_bundle(calibrated_224, tmp_path_factory) -> Path:
    from shvit_edge.harness.bundle import BundleOptions, write_bundle

    out = tmp_path_factory.mktemp("onnx_bundle") / "bundle"
    write_bundle([calibrated_224 / "shvit_s1_224x224.onnx"], out, BundleOptions(samples=1))
    return out


@pytest.fixture
def bundle_copy(onnx_bundle, tmp_path) -> Path:
    return Path(shutil.copytree(onnx_bundle, tmp_path / "bundle", symlinks=True))


def _tensor(folder: Path) -> str:
    doc = json.loads((folder / BUNDLE_JSON).read_text())
    return next(t["file"] for t in doc["tensors"].values() if t["role"] == "input")


def _flip(folder: Path) -> None:
    path = folder / _tensor(folder)
    data = bytearray(path.read_bytes())
    data[7] ^= 1
    path.write_bytes(bytes(data))


def _outside(folder: Path, path: str) -> None:
    doc = json.loads((folder / BUNDLE_JSON).read_text())
    doc["files"][0]["path"] = path
    doc["id"] = bundle_id(doc)
    (folder / BUNDLE_JSON).write_text(json.dumps(doc))


def _symlinked(folder: Path) -> None:
    relative = _tensor(folder)
    outside = folder.parent / "elsewhere.f32"
    shutil.move(folder / relative, outside)
    (folder / relative).symlink_to(outside)  # same bytes, same sha256: only the link is wrong


def _symlinked_folder(folder: Path) -> None:
    shutil.move(folder / "tensors", folder.parent / "tensors-elsewhere")
    (folder / "tensors").symlink_to(folder.parent / "tensors-elsewhere")


BROKEN = {
    "a file fails its sha256": (_flip, "fails its sha256"),
    "a path with ..": (lambda f: _outside(f, "../bundle/" + _tensor(f)), "must stay inside the bundle"),
    "an absolute path": (lambda f: _outside(f, str(f / _tensor(f))), "must stay inside the bundle"),
    "a symlinked file": (_symlinked, "symlink"),
    "a symlinked folder": (_symlinked_folder, "symlink"),
    "an edited id": (lambda f: (lambda d: (f / BUNDLE_JSON).write_text(json.dumps({**d, "id": "0" * 64})))(
        json.loads((f / BUNDLE_JSON).read_text())), "id"),
    "a missing file": (lambda f: (f / _tensor(f)).unlink(), "missing"),
    "bundle.json not JSON": (lambda f: (f / BUNDLE_JSON).write_text("{"), "not valid JSON"),
}


@pytest.mark.parametrize("name", BROKEN)
def test_a_broken_bundle_is_refused_by_ingest_and_harness(bundle_copy, tmp_path, name):
    breaker, message = BROKEN[name]
    breaker(bundle_copy)
    db = tmp_path / "r.sqlite"
    for args in (("results", "ingest", bundle_copy, "--db", db), ("harness", "run", bundle_copy, "--out",
                                                                  tmp_path / "result.json")):
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "result.json").exists()
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT count(*) FROM bundles").fetchone()[0] == 0


def _zip_of(folder: Path, out: Path, extra: list[tuple[zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(out, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
        for info, data in extra:
            archive.writestr(info, data)
    return out


def _link_entry(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


@pytest.mark.parametrize("entry, message", [
    (_link_entry("tensors/link.f32", "/etc/passwd"), "symlink"),
    ((zipfile.ZipInfo("../escaped.txt"), b"x"), "must stay inside the bundle"),
    ((zipfile.ZipInfo("/abs/escaped.txt"), b"x"), "must stay inside the bundle"),
    ((zipfile.ZipInfo("tensors/../../escaped.txt"), b"x"), "must stay inside the bundle"),
])
def test_a_zip_with_entries_outside_or_links_is_refused_before_unpacking(onnx_bundle, tmp_path, entry, message):
    archive = _zip_of(onnx_bundle, tmp_path / "b.zip", [entry])
    db = tmp_path / "r.sqlite"
    for args in (("results", "ingest", archive, "--db", db), ("harness", "run", archive)):
        result = run(*args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    assert not (tmp_path / "escaped.txt").exists() and not Path("/abs").exists()


def test_the_zip_of_a_bundle_reads_as_the_bundle(onnx_bundle, tmp_path):
    archive = _zip_of(onnx_bundle, tmp_path / "b.zip", [])
    with open_bundle(archive) as zipped, open_bundle(onnx_bundle) as folder:
        assert zipped.id == folder.id
        assert np.array_equal(zipped.artifacts[0].inputs(), folder.artifacts[0].inputs())
        unpacked = zipped.root
    assert not unpacked.exists()  # the temporary folder is gone


def test_bundle_zip_writes_one_archive(calibrated_224, tmp_path):
    result = run("bundle", calibrated_224 / "shvit_s1_224x224.onnx", "--out", tmp_path / "b", "--zip", "--samples", "1",
                 "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["bundle"] == str(tmp_path / "b.zip") and os.listdir(tmp_path) == ["b.zip"]
    with open_bundle(tmp_path / "b.zip") as bundle:
        assert bundle.id == summary["id"] and bundle.doc["inputs"]["samples"] == 1
    again = run("bundle", calibrated_224 / "shvit_s1_224x224.onnx", "--out", tmp_path / "b", "--zip")
    assert again.exit_code == 2 and "exists" in again.output


# -- property-based: the reader on a tiny bundle --


def _tiny(folder: Path, manifest: dict) -> Path:
    """A bundle of one 'ONNX' artifact of 32 bytes (its manifest says so), one input and one reference."""
    (folder / "artifacts").mkdir(parents=True)
    (folder / "tensors").mkdir()
    artifact = b"not a real model, 32 bytes long."
    (folder / "artifacts" / "m.onnx").write_bytes(artifact)
    sha = hashlib.sha256(artifact).hexdigest()
    manifest = {**manifest, "artifact": {**manifest["artifact"], "file": "m.onnx", "sha256": sha,
                                         "size_bytes": len(artifact)}, "verification": None}
    (folder / "artifacts" / "m.onnx.json").write_text(json.dumps(manifest))
    h, w = manifest["resolution"]
    (folder / "tensors" / "in.f32").write_bytes(np.zeros((1, 3, h, w), "<f4").tobytes())
    (folder / "tensors" / "ref.f32").write_bytes(np.ones((1, 1000), "<f4").tobytes())
    files = [{"path": p.relative_to(folder).as_posix(), "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
              "size": p.stat().st_size} for p in sorted(folder.rglob("*")) if p.is_file()]
    doc = {"schema_version": 1, "kind": "shvit-edge-bundle", "id": "", "shvit_edge_version": "0.1.0",
           "created_at": "2026-12-03T00:00:00+00:00", "inputs": {"images": [], "samples": 1, "seed": 0},
           "tensors": {"in": {"file": "tensors/in.f32", "dtype": "float32", "shape": [1, 3, h, w], "layout": "NCHW",
                              "role": "input"},
                       "ref": {"file": "tensors/ref.f32", "dtype": "float32", "shape": [1, 1000], "layout": "NC",
                               "role": "reference"}},
           "artifacts": [{"name": "m.onnx", "file": "artifacts/m.onnx", "manifest": "artifacts/m.onnx.json",
                          "sha256": sha, "target": "onnx", "family": "shvit", "variant": manifest["variant"],
                          "resolution": [h, w], "batch": 1, "precision": "fp32", "quantization": None,
                          "input": {"tensor": "in", "name": "input", "kind": "tensor"},
                          "output": {"name": "logits", "layout": "NC", "reference": "ref"},
                          "tolerance": {"class": "fp32", "cosine": 0.99999, "max_abs": 0.001, "top1_agreement": 1.0,
                                        "sqnr_db": None, "source": "manifest"},
                          "run": {"warmup": 1, "iterations": 2, "threads": 1, "settings": ["cpu"]}}],
           "files": files}
    doc["id"] = bundle_id(doc)
    (folder / BUNDLE_JSON).write_text(json.dumps(doc))
    return folder


@pytest.fixture(scope="module")
def tiny(calibrated_224, tmp_path_factory) -> Path:
    manifest = json.loads((calibrated_224 / "shvit_s1_224x224.onnx.json").read_text())
    folder = _tiny(tmp_path_factory.mktemp("tiny") / "bundle", manifest)
    read_bundle(folder)  # the unbroken tiny bundle reads
    return folder


def _paths_of(doc, trail=()):
    """Every (trail) into the JSON tree."""
    yield trail
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths_of(v, (*trail, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths_of(v, (*trail, i))


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) |
                    st.text(max_size=30), lambda inner: st.lists(inner, max_size=4) |
                    st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
PATHS = st.one_of(st.sampled_from(["../x", "/etc/passwd", "a/../../b", "tensors/../tensors/in.f32", "./in.f32",
                                   "tensors//in.f32", "tensors\\in.f32", "C:/x", "tensors/in.f32\x00", "",
                                   "tensors/in.f32", "artifacts/m.onnx", "bundle.json", "tensors"]),
                  st.text(max_size=40))


def _read(folder: Path) -> None:
    try:
        read_bundle(folder)
    except InputError as exc:
        assert "\n" not in str(exc) and str(exc)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(data=st.data(), resign_id=st.booleans())
def test_a_rewritten_bundle_json_never_crashes_the_reader(tiny, tmp_path, data, resign_id):
    folder = tmp_path / "b"
    if not folder.exists():
        shutil.copytree(tiny, folder)
    original = (tiny / BUNDLE_JSON).read_text()
    doc = json.loads(original)
    trail = data.draw(st.sampled_from(list(_paths_of(doc))[1:]))
    value = data.draw(JSON)
    target = doc
    for key in trail[:-1]:
        target = target[key]
    target[trail[-1]] = value
    if resign_id:
        try:
            doc["id"] = bundle_id(doc)
        except (ValueError, TypeError):
            pass
    (folder / BUNDLE_JSON).write_text(json.dumps(doc))
    _read(folder)
    (folder / BUNDLE_JSON).write_text(original)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_as_bundle_json_are_refused_in_one_line(tiny, tmp_path, raw):
    folder = tmp_path / "b"
    if not folder.exists():
        shutil.copytree(tiny, folder)
    (folder / BUNDLE_JSON).write_bytes(raw)
    with pytest.raises(InputError):
        read_bundle(folder)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(path=PATHS, where=st.sampled_from(["files", "tensor", "artifact", "manifest"]))
def test_a_path_is_read_only_inside_the_bundle(tiny, tmp_path, path, where):
    folder = tmp_path / "b"
    if not folder.exists():
        shutil.copytree(tiny, folder)
    original = (tiny / BUNDLE_JSON).read_text()
    doc = json.loads(original)
    if where == "files":
        doc["files"][0]["path"] = path
    elif where == "tensor":
        doc["tensors"]["in"]["file"] = path
    else:
        doc["artifacts"][0]["file" if where == "artifact" else "manifest"] = path
    doc["id"] = bundle_id(doc)
    (folder / BUNDLE_JSON).write_text(json.dumps(doc))
    legit = {"files": json.loads(original)["files"][0]["path"], "tensor": "tensors/in.f32",
             "artifact": "artifacts/m.onnx",
             "manifest": "artifacts/m.onnx.json"}[where]
    if path == legit:
        read_bundle(folder)
    else:
        with pytest.raises(InputError):
            read_bundle(folder)
    (folder / BUNDLE_JSON).write_text(original)


NAMES = st.one_of(st.sampled_from(["../a", "/a", "a/../../b", "a\\b", "a//b", "./a", "a/", "..", "ok/file",
                                   "ok/../../x", "\x01", "bundle.json"]), st.text(min_size=1, max_size=20))


@settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(entries=st.lists(st.tuples(NAMES, st.sampled_from([0, stat.S_IFREG, stat.S_IFLNK, stat.S_IFDIR,
                                                           stat.S_IFIFO]), st.binary(max_size=20)),
                        min_size=1, max_size=5))
def test_unzip_never_writes_outside_its_folder(tmp_path, entries):
    base = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
    base.mkdir()
    archive = base / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, kind, data in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = (kind | 0o644) << 16
            try:
                zf.writestr(info, data)
            except (ValueError, UnicodeEncodeError):
                return
    into = base / "into"
    into.mkdir()
    try:
        unzip(archive, into)
    except InputError as exc:
        assert "\n" not in str(exc)
        assert list(into.iterdir()) == []  # refused before anything was unpacked
    else:
        for path in into.rglob("*"):
            assert not path.is_symlink()
            assert into in path.resolve().parents
    assert sorted(p.name for p in base.iterdir()) == ["a.zip", "into"]
