"""Write the golden vectors that the Python tests, the Kotlin core (android_harness/core) and its Swift mirror
(ios_harness/HarnessCore) all read. Run it from the repository root when the bundle or result format changes:

    .venv/bin/python tests/golden/make_golden.py

then regenerate the Kotlin-written result (``golden.update=1``, see android_harness/core/run-tests.sh) and commit
both. The model is the test family TinyFake (tests/test_families.py: conv, BatchNorm, ReLU, pooling, linear) with
seeded weights and 10 classes, exported at 64x64 (the smallest resolution) to all four targets, so the vectors
stay small.

Written here (tests/golden/):
- ``bundle/``: ``shvit-edge bundle`` of the four artifacts (two photos, two random samples);
- ``result_host.json``: ``shvit-edge harness run`` of that bundle on this machine;
- ``latency_stats.json``: latency vectors and what :func:`shvit_edge.harness.records.latency_stats` makes of them;
- ``parity.json``: outputs, references and what :func:`shvit_edge.parity.metrics.compare` makes of them;
- ``bad/<case>/``: a one-artifact bundle broken one way each, with ``why.txt``: a fragment every reader's refusal
  must contain (the offending path or key).
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests"))

from test_families import FAKE  # noqa: E402  (the test family, registered below)

from shvit_edge.export import ExportOptions, export, load_source, resolve_targets  # noqa: E402
from shvit_edge.harness.bundle import BundleOptions, bundle_id, write_bundle  # noqa: E402
from shvit_edge.harness.host import HarnessOptions, run_bundle  # noqa: E402
from shvit_edge.harness.records import latency_stats  # noqa: E402
from shvit_edge.models.registry import register_family  # noqa: E402
from shvit_edge.parity.metrics import compare  # noqa: E402

RESOLUTION = (64, 64)
CLASSES = 10
IMAGES = ("astronaut.png", "coffee.png")


def f32_base64(array) -> dict:
    a = np.ascontiguousarray(array, dtype="<f4")
    return {"shape": list(a.shape), "base64": base64.b64encode(a.tobytes()).decode("ascii")}


def model_checkpoint(folder: Path) -> Path:
    torch.manual_seed(7)
    model = FAKE.create("tinyfake_a", num_classes=CLASSES)
    with torch.no_grad():  # a BatchNorm with statistics of its own, so folding it changes the weights
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
        model.bn.weight.uniform_(0.5, 1.5)
        model.bn.bias.uniform_(-0.2, 0.2)
    path = folder / "tinyfake_a.pth"
    torch.save({"model": model.state_dict()}, path)
    return path


def write_main_bundle(work: Path, checkpoint: Path) -> None:
    source = load_source(variant=None, checkpoint=str(checkpoint))
    out = work / "artifacts"
    report = export(source, resolve_targets("coreml,executorch,onnx,tflite"), ExportOptions(resolution=RESOLUTION),
                    out, jobs=1)
    assert not report.failures, report.failures
    images = work / "images"
    images.mkdir()
    for name in IMAGES:
        shutil.copy(REPO.parent / "shared" / "fixtures" / "images" / name, images / name)
    paths = sorted(a.path for a in report.artifacts)
    target = HERE / "bundle"
    shutil.rmtree(target, ignore_errors=True)
    write_bundle(paths, target, BundleOptions(images=str(images), samples=2, seed=0, checkpoint=str(checkpoint),
                                              warmup=1, iterations=5))
    run_bundle(target, HERE / "result_host.json", HarnessOptions())


def write_latency_stats() -> None:
    rng = np.random.default_rng(0)
    vectors = [[4.2], [3.0, 1.0], [5.0, 5.0, 5.0], list(range(1, 11)), [float(v) for v in range(11, 0, -1)],
               [0.0, 0.0, 1e-3], rng.gamma(4.0, 2.0, 37).round(6).tolist(), rng.lognormal(2.0, 0.5, 100).tolist(),
               (rng.normal(8.0, 0.3, 1001)).tolist()]
    cases = [{"latencies_ms": v, "stats": latency_stats(v)} for v in vectors]
    (HERE / "latency_stats.json").write_text(json.dumps({"cases": cases}, indent=1) + "\n")


def write_parity() -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(0, 3, (4, CLASSES)).astype(np.float32)
    tie = np.zeros((2, CLASSES), np.float32)
    tie[:, 3] = tie[:, 7] = 1.0
    tie_ref = tie.copy()
    tie_ref[:, 7] = 1.5
    pairs = [(ref, ref.copy()), (ref + rng.normal(0, 1e-3, ref.shape).astype(np.float32), ref),
             (ref[::-1].copy(), ref), (tie, tie_ref), (-ref, ref)]
    cases = []
    for out, reference in pairs:
        m = compare(out, reference).as_dict()
        cases.append({"output": f32_base64(out), "reference": f32_base64(reference),
                      "metrics": {k: m[k] for k in ("cosine", "max_abs", "top1_agreement", "sqnr_db")}})
    (HERE / "parity.json").write_text(json.dumps({"cases": cases}, indent=1) + "\n")


def _rewrite(folder: Path, edit) -> None:
    doc = json.loads((folder / "bundle.json").read_text())
    edit(doc)
    doc["id"] = bundle_id(doc)
    (folder / "bundle.json").write_text(json.dumps(doc, indent=1))


def _refile(folder: Path, relative: str) -> None:
    """Make ``files`` tell the truth about ``relative`` again (so only the intended defect remains)."""
    def edit(doc):
        data = (folder / relative).read_bytes()
        for f in doc["files"]:
            if f["path"] == relative:
                f["size"], f["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    _rewrite(folder, edit)


def write_bad(work: Path, checkpoint: Path) -> None:
    """One small ONNX bundle (one random sample), then a copy per defect."""
    source = load_source(variant=None, checkpoint=str(checkpoint))
    report = export(source, resolve_targets("onnx"), ExportOptions(resolution=RESOLUTION), work / "small", jobs=1)
    assert not report.failures, report.failures
    good = work / "good"
    write_bundle([report.artifacts[0].path], good, BundleOptions(samples=1, checkpoint=str(checkpoint)))
    doc = json.loads((good / "bundle.json").read_text())
    x_file = next(t["file"] for t in doc["tensors"].values() if t["role"] == "input")
    x_id = next(k for k, t in doc["tensors"].items() if t["role"] == "input")
    ref_id = next(k for k, t in doc["tensors"].items() if t["role"] == "reference")
    onnx_file = doc["artifacts"][0]["file"]

    def flip(folder):
        data = bytearray((folder / x_file).read_bytes())
        data[5] ^= 0x40
        (folder / x_file).write_bytes(bytes(data))

    def truncate(folder):
        (folder / x_file).write_bytes((folder / x_file).read_bytes()[:-4])

    def missing(folder):
        (folder / onnx_file).unlink()

    def dotdot(folder):
        _rewrite(folder, lambda d: d["files"][0].update(path="../" + d["files"][0]["path"]))

    def absolute(folder):
        _rewrite(folder, lambda d: d["files"][0].update(path="/etc/" + d["files"][0]["path"]))

    def backslash(folder):
        _rewrite(folder, lambda d: d["files"][0].update(path=d["files"][0]["path"].replace("/", "\\")))

    def version(folder):
        _rewrite(folder, lambda d: d.update(schema_version=2))

    def duplicate_key(folder):
        text = (folder / "bundle.json").read_text()
        twice = '"schema_version": 1, "schema_version": 1'
        (folder / "bundle.json").write_text(text.replace('"schema_version": 1', twice, 1))

    def nan(folder):
        text = (folder / "bundle.json").read_text()
        (folder / "bundle.json").write_text(text.replace('"cosine": ', '"cosine": NaN, "x": ', 1))

    def tensor_shape(folder):  # the file no longer holds prod(shape) values; files still agree with the bytes
        (folder / x_file).write_bytes((folder / x_file).read_bytes()[:-12])
        _refile(folder, x_file)

    def input_dtype(folder):
        _rewrite(folder, lambda d: d["tensors"][x_id].update(dtype="uint8"))

    def reference_shape(folder):
        _rewrite(folder, lambda d: d["tensors"][ref_id].update(shape=[1, 2, CLASSES // 2]))

    cases = {"sha256_mismatch": (flip, x_file), "size_mismatch": (truncate, x_file),
             "missing_file": (missing, onnx_file),
             "dotdot_path": (dotdot, ".."), "absolute_path": (absolute, "/etc/"), "backslash_path": (backslash, "\\"),
             "schema_version": (version, "schema_version"), "duplicate_key": (duplicate_key, "schema_version"),
             "nan": (nan, "NaN"), "tensor_size": (tensor_shape, x_file), "input_dtype": (input_dtype, "uint8"),
             "reference_shape": (reference_shape, "reference")}
    bad = HERE / "bad"
    shutil.rmtree(bad, ignore_errors=True)
    bad.mkdir()
    (HERE / "bad" / "README.md").write_text(
        "Each folder is one small bundle broken one way (tests/golden/make_golden.py, `write_bad`). Every reader\n"
        "(Python `open_bundle`, the Kotlin core, the Swift mirror) must refuse it with a message containing\n"
        "`why.txt` (the offending path, key or value).\n")
    for name, (breaks, why) in cases.items():
        folder = bad / name
        shutil.copytree(good, folder)
        breaks(folder)
        (folder / "why.txt").write_text(why)


def main() -> None:
    register_family(FAKE)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        checkpoint = model_checkpoint(work)
        write_main_bundle(work, checkpoint)
        write_bad(work, checkpoint)
    write_latency_stats()
    write_parity()
    print(f"wrote {HERE}")


if __name__ == "__main__":
    main()
