"""README promises of export, verify and bench that no other test held to account (issue 13).

Each test here would fail if its promise broke. To keep CI cheap, every export is S1 at 64x64 and the
expensive work is shared through module fixtures:

- ``all_run``: one ``export --target all --jobs 1 --labels FILE`` of the calibrated checkpoint, with the
  ExecuTorch backend made to fail inside this process (the slowest target, so the failure also saves its
  conversion); Core ML, TFLite and ONNX are really converted. Built once per run, across xdist workers;
- ``verified``: ``verify --threads 2`` of that ONNX artifact, with ONNX Runtime's session options recorded in
  the verify child process;
- ``benched``: ``bench --report DIR`` of the verified artifact, with the raw latencies the workers return
  recorded in this process;
- ``ema_force``: a copy of that ONNX artifact overwritten with ``--force`` by an ``--ema`` export of a checkpoint
  whose EMA weights differ from its model weights, into a folder holding stale temporaries.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from conftest import assert_reacts, built_once, photo_inputs
from shvit_edge.cli import cli

RESOLUTION = 64
FAST_BENCH = ["--iterations", "12", "--rounds", "2", "--warmup", "1"]
#: an fp32 artifact against its reference; the profile's own bar is at least this strict
PARITY_COSINE = 0.9999


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _photos(size: int = RESOLUTION) -> torch.Tensor:
    """The five fixture photos (timm's evaluation transform at 224, from the fixtures) resized to ``size``."""
    return F.interpolate(photo_inputs(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def _cli(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _said(result) -> str:
    """The end of what a command printed (the converters' progress bars can run to megabytes)."""
    return result.output[-3000:]


def _load_raw(path: Path) -> dict:
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True)


# ---------------------------------------------------------------------------------------- the shared runs


def _labels() -> list[str]:
    """1000 unique class names, some with the spaces, commas and non-ASCII letters real label files hold."""
    labels = [f"class {i:04d}" for i in range(1000)]
    labels[0], labels[1], labels[999] = "great white shark, white shark", "café crème", "zebra-ish"
    return labels


@pytest.fixture(scope="module")
def all_run(tmp_path_factory, calibrated_source, calibrated_pth):
    """``export --target all --jobs 1 --labels FILE`` with the ExecuTorch backend raising inside this process
    (``--jobs 1`` exports every target here, through the backend module's ``export``). Run once per test run
    (``conftest.built_once``: under pytest-xdist every worker would otherwise repeat it) and read-only: what the
    command printed is kept beside its output folder."""
    from shvit_edge.backends import executorch as executorch_backend

    assert_reacts(calibrated_source.model, _photos())  # the reference verify judges on, at this resolution

    def build(folder: Path) -> None:
        labels = folder / "my labels.txt"
        labels.write_text("\n".join(_labels()) + "\n", encoding="utf-8")
        calls = []

        def broken_export(job, tmp):
            calls.append(str(tmp))
            Path(tmp).write_bytes(b"half a program")  # a partial write the failure must not leave behind
            raise RuntimeError("XNNPACK lowering exploded (injected by the test)")

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(executorch_backend, "export", broken_export)
            result = _cli("export", "--target", "all", "--jobs", "1", "--checkpoint", calibrated_pth,
                          "--resolution", RESOLUTION, "--labels", labels, "--out", folder / "out", "--json")
        (folder / "run.json").write_text(json.dumps({
            "exit_code": result.exit_code, "stdout": result.stdout, "stderr": result.stderr[-20000:],
            "output": result.output[-3000:], "injected": calls}), encoding="utf-8")

    folder = built_once(tmp_path_factory, "promises_export_all_s1_64", build)
    run = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    assert run["injected"], "the ExecuTorch backend was never asked: the failure was not injected"
    return SimpleNamespace(run=run, out=folder / "out", labels=folder / "my labels.txt",
                           doc=_json_document(run["stdout"]))


def _json_document(stdout: str) -> dict:
    """The --json document. Under CliRunner ``sys.stdout`` is a Python-level stream, and litert-torch's progress
    lines, which a real process's converter writes to file descriptor 1 (held back there by
    backends/_quiet.py), reach it too: the document is the part from the first line that opens it."""
    start = 0 if stdout.startswith("{") else stdout.index("\n{\n") + 1
    return json.loads(stdout[start:])


@pytest.fixture(scope="module")
def onnx_artifact(all_run, tmp_path_factory) -> Path:
    """This module's own copy of the run's ONNX artifact and manifest (verify writes into the manifest)."""
    (path,) = [Path(a["path"]) for a in all_run.doc["artifacts"] if a["target"] == "onnx"]
    folder = tmp_path_factory.mktemp("onnx")
    for name in (path.name, path.name + ".json"):
        shutil.copy2(path.with_name(name), folder / name)
    return folder / path.name


SPY = '''
"""Test spy (tests/test_promises_export.py): record the session options ONNX Runtime is given."""
import json
import os

_log = os.environ.get("SHVIT_EDGE_TEST_ORT_LOG")
if _log:
    import onnxruntime as _ort

    class _Session(_ort.InferenceSession):
        def __init__(self, path, sess_options=None, *args, **kwargs):
            with open(_log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"pid": os.getpid(), "path": str(path),
                                     "intra_op_num_threads": getattr(sess_options, "intra_op_num_threads", None)})
                         + "\\n")
            super().__init__(path, sess_options, *args, **kwargs)

    _ort.InferenceSession = _Session
# chain to a sitecustomize this one shadows, if the interpreter has one
import importlib
import sys

_here = os.path.dirname(os.path.abspath(__file__))
_saved = list(sys.path)
_this = sys.modules.pop("sitecustomize")
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
try:
    importlib.import_module("sitecustomize")
except ImportError:
    pass
finally:
    sys.path[:] = _saved
    sys.modules["sitecustomize"] = _this  # what the import of this module expects to find when it ends
'''


@pytest.fixture(scope="module")
def verified(tmp_path_factory, onnx_artifact, images_dir):
    """``verify --threads 2`` on the fixture photos, with every ONNX Runtime session the verify child process
    opens recorded by a ``sitecustomize`` spy (the child inherits PYTHONPATH)."""
    spy_dir = tmp_path_factory.mktemp("spy")
    (spy_dir / "sitecustomize.py").write_text(SPY, encoding="utf-8")
    log = spy_dir / "sessions.jsonl"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(spy_dir), os.environ.get("PYTHONPATH")])))
        mp.setenv("SHVIT_EDGE_TEST_ORT_LOG", str(log))
        result = _cli("verify", onnx_artifact, "--threads", "2", "--images", images_dir, "--samples", "2", "--json")
    sessions = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return SimpleNamespace(result=result, sessions=sessions,
                           doc=json.loads(result.stdout) if result.stdout.strip() else None)


@pytest.fixture(scope="module")
def benched(tmp_path_factory, verified, onnx_artifact):
    """``bench ARTIFACT --report DIR --json`` with the raw latencies every worker returns recorded here."""
    from shvit_edge import bench as bench_module

    assert verified.result.exit_code == 0, _said(verified.result)
    report_dir = tmp_path_factory.mktemp("report") / "report"
    raw: dict[str, list[float]] = {}
    real_ask = bench_module._Worker.ask

    def recording_ask(candidate, request):
        reply = real_ask(candidate, request)
        if "latencies_ms" in reply:
            raw.setdefault(candidate.label, []).extend(reply["latencies_ms"])
        return reply

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bench_module._Worker, "ask", staticmethod(recording_ask))
        result = _cli("bench", onnx_artifact, *FAST_BENCH, "--report", report_dir, "--json")
    assert result.exit_code == 0, _said(result)
    return SimpleNamespace(doc=json.loads(result.stdout), raw=raw, report_dir=report_dir)


def _dead_process_temporary(folder: Path, name: str) -> Path:
    """The temporary path a separate, now finished, shvit-edge process would have written ``name`` under: named
    by that process itself, so its pid is dead and its namespace is this machine's."""
    code = ("import sys; from pathlib import Path; from shvit_edge.atomic import temporary_path; "
            "print(temporary_path(Path(sys.argv[1]) / sys.argv[2]))")
    out = subprocess.run([sys.executable, "-c", code, str(folder), name], capture_output=True, text=True,
                         check=True).stdout.strip()
    return Path(out)


@pytest.fixture(scope="module")
def ema_checkpoints(tmp_path_factory, calibrated_pth, official_pth):
    """``ema.pth``: as ``model_ema``, the calibrated weights (which react to their input) with other classifier
    biases (so that its artifact is not the one exported from the calibrated checkpoint), and as ``model`` the
    official fixture's weights (other weights of the same shapes); ``swapped.pth``: the two exchanged."""
    folder = tmp_path_factory.mktemp("ema")
    raw = _load_raw(calibrated_pth)
    other = _load_raw(official_pth)["model"]
    bias = raw["model"]["head.l.bias"]
    ema = dict(raw["model"], **{"head.l.bias": bias + 0.5 * torch.randn(bias.shape,
                                                                      generator=torch.Generator().manual_seed(0))})
    assert {k: v.shape for k, v in ema.items()} == {k: v.shape for k, v in other.items()}
    assert not torch.equal(other["head.l.weight"], ema["head.l.weight"])
    paths = {}
    for name, (model, model_ema) in {"ema.pth": (other, ema), "swapped.pth": (ema, other)}.items():
        torch.save({**raw, "model": model, "model_ema": model_ema}, folder / name)
        paths[name] = folder / name
    return paths


@pytest.fixture(scope="module")
def ema_force(tmp_path_factory, onnx_artifact, ema_checkpoints):
    """Into a folder holding an existing artifact (a copy of the calibrated ONNX export) and temporaries: first
    the same export without ``--force`` (refused), then with ``--force --ema``."""
    out = tmp_path_factory.mktemp("force") / "out"
    out.mkdir()
    existing = out / onnx_artifact.name
    shutil.copy2(onnx_artifact, existing)
    shutil.copy2(onnx_artifact.with_name(onnx_artifact.name + ".json"), out / (existing.name + ".json"))
    before = {"sha256": _sha256(existing), "mtime_ns": existing.stat().st_mtime_ns,
              "manifest": (out / (existing.name + ".json")).read_bytes()}

    # temporaries: a SIGKILLed run's (its process is gone), of a file and of a package folder ...
    stale_file = _dead_process_temporary(out, existing.name)
    stale_file.write_bytes(b"half an artifact")
    stale_dir = _dead_process_temporary(out, "shvit_s1_64x64_fp16.mlpackage")
    (stale_dir / "Data").mkdir(parents=True)
    (stale_dir / "Data" / "weight.bin").write_bytes(b"\0" * 64)
    # ... another host's or container's, untouched for more than a day, and one written under the old name
    # without a namespace, as old; and what must stay: another host's fresh one, and a live process's
    day_ago = time.time() - 25 * 3600
    foreign_old = out / f".shvit-edge-tmp-{os.getpid()}.0123456789ab-shvit_s1_64x64.onnx"
    legacy_old = out / f".shvit-edge-tmp-{os.getpid()}-shvit_s1_64x64.onnx.json"
    foreign_fresh = out / ".shvit-edge-tmp-4242.ba9876543210-shvit_s1_64x64.tflite"
    for path in (foreign_old, legacy_old, foreign_fresh):
        path.write_bytes(b"elsewhere")
    for path in (foreign_old, legacy_old):
        os.utime(path, (day_ago, day_ago))
    from shvit_edge.atomic import temporary_path

    live = temporary_path(out / "shvit_s1_64x64_b2.onnx")  # this (running) process's
    live.write_bytes(b"in progress")

    args = ["export", "--target", "onnx", "--checkpoint", ema_checkpoints["ema.pth"], "--ema",
            "--resolution", RESOLUTION, "--out", out, "--json"]
    refused = _cli(*args)
    after_refusal = {"sha256": _sha256(existing), "mtime_ns": existing.stat().st_mtime_ns,
                     "manifest": (out / (existing.name + ".json")).read_bytes()}
    forced = _cli(*args, "--force")
    return SimpleNamespace(out=out, path=existing, before=before, after_refusal=after_refusal, refused=refused,
                           forced=forced, removed=(stale_file, stale_dir, foreign_old, legacy_old),
                           kept=(foreign_fresh, live))


# ------------------------------------------------------------------------- export --target all, --labels


def test_target_all_with_one_failed_target_keeps_the_others_and_exits_1(all_run):
    """README: "With `--target all` every finished target stays, and a failed one is named with exit 1", and
    `--json` holds `failures`."""
    from shvit_edge.manifest import read_manifest

    run, doc = all_run.run, all_run.doc
    assert run["exit_code"] == 1, run["output"]
    assert doc is not None, "no --json document on stdout"
    (failure,) = doc["failures"]
    assert failure["target"] == "executorch" and failure["profile"] == "android-arm64-executorch"
    assert "XNNPACK lowering exploded" in failure["error"]
    assert "FAILED executorch" in run["stderr"]
    assert sorted(a["target"] for a in doc["artifacts"]) == ["coreml", "onnx", "tflite"]
    for a in doc["artifacts"]:
        path = Path(a["path"])
        manifest = read_manifest(Path(a["manifest"]))
        assert path.exists() and manifest.target == a["target"] and manifest.resolution == (64, 64)
        if path.is_file():  # an .mlpackage folder's digest is framed (checked in test_hardening)
            assert manifest.artifact.sha256 == a["sha256"] == _sha256(path)
    # the failed target left nothing: no artifact, no manifest, no temporary
    names = sorted(p.name for p in all_run.out.iterdir())
    assert names == sorted(n for a in doc["artifacts"] for n in (Path(a["path"]).name, Path(a["manifest"]).name))
    assert not any(n.endswith(".pte") or n.startswith(".shvit-edge-tmp-") for n in names), names


def test_labels_file_becomes_the_core_ml_classifier_labels(all_run):
    """README: the Core ML classifier has "ImageNet-1k names for 1000 classes, else `--labels`": a label file
    that fits the class count is used, in its order, and the manifest names it."""
    from shvit_edge.backends.coreml import describe
    from shvit_edge.manifest import read_manifest

    path, labels = all_run.labels, _labels()
    (package,) = [Path(a["path"]) for a in all_run.doc["artifacts"] if a["target"] == "coreml"]
    info = describe(package)
    assert info["classifier"]["labels"] == labels
    assert info["classifier"]["predicted_feature"] == "classLabel"
    assert info["metadata"]["user_defined"]["shvit_edge.labels"] == str(path)
    assert read_manifest(package.with_name(package.name + ".json")).labels == str(path)


# --------------------------------------------------------------------------------------- verify --threads


def test_verify_threads_is_accepted_and_reaches_the_runtime(verified, onnx_artifact):
    """README: `verify ... [--threads N]`: the ONNX Runtime session that runs the artifact (in verify's child
    process) is opened with N intra-op threads, and the artifact passes."""
    assert verified.result.exit_code == 0, _said(verified.result)
    (r,) = verified.doc["results"]
    assert r["status"] == "pass" and r["artifact"] == str(onnx_artifact), r
    metrics = r["metrics"]["logits"]
    assert metrics["samples"] == 5 + 2 and metrics["cosine"] >= PARITY_COSINE
    assert metrics["top1_agreement"] == 1.0
    assert verified.sessions, "the verify child process opened no ONNX Runtime session (spy not loaded?)"
    assert [s["intra_op_num_threads"] for s in verified.sessions] == [2] * len(verified.sessions)


# ------------------------------------------------------------------------------------- bench --report DIR


def test_bench_report_writes_markdown_html_and_the_latency_cosine_plot(benched, verified):
    """README: `--report DIR` writes report.md and report.html (one self-contained page) with the table and
    plots, among them latency against the verify cosine for artifacts whose manifest holds a verify result."""
    from PIL import Image

    from shvit_edge.bench.report import colours

    out = benched.report_dir
    assert {p.name for p in out.iterdir()} == {"report.md", "report.html", "latency.png", "roofline.png",
                                               "tradeoff.png"}
    (result,) = benched.doc["results"]
    cosine = verified.doc["results"][0]["metrics"]["logits"]["cosine"]
    assert result["verify"]["status"] == "pass" and result["verify"]["cosine"] == pytest.approx(cosine)

    page = (out / "report.html").read_text(encoding="utf-8")
    assert "src=\"http" not in page and "<link" not in page  # self-contained
    embedded = dict(re.findall(r'<img id="plot-(\w+)" alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"',
                               page))
    assert set(embedded) == {"latency", "roofline", "tradeoff"}
    for name, data in embedded.items():
        assert base64.b64decode(data) == (out / f"{name}.png").read_bytes(), name
    # the trade-off plot is a real picture with the ONNX artifact's point drawn in the ONNX colour
    image = Image.open(io.BytesIO(base64.b64decode(embedded["tradeoff"]))).convert("RGB")
    assert image.width > 300 and image.height > 200
    pixels = np.asarray(image).reshape(-1, 3).astype(int)
    rgb = np.array([int(colours()["onnx"][i:i + 2], 16) for i in (1, 3, 5)])
    assert int((np.abs(pixels - rgb).sum(axis=1) <= 12).sum()) >= 10, "no ONNX point on the trade-off plot"

    markdown = (out / "report.md").read_text(encoding="utf-8")
    for name in ("latency.png", "roofline.png", "tradeoff.png"):
        assert f"![{name}]({name})" in markdown
    assert onnx_name(result) in markdown and f"{cosine:.5f}" in markdown  # the table's verify cosine
    assert onnx_name(result) in page and "PyTorch eager (fused)" in page


def onnx_name(result: dict) -> str:
    return Path(result["artifact"]).name


def _quantile(samples: list[float], q: float) -> float:
    """The q-quantile with linear interpolation between the closest ranks (the "inclusive" definition),
    computed by hand."""
    ordered = sorted(samples)
    rank = q * (len(ordered) - 1)
    lo = int(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def test_bench_summary_fields_agree_with_the_raw_latencies(benched):
    """The document holds no raw samples (bench.schema.json has none), so the latencies every worker returned
    are recorded in this process, and each derived field is recomputed from them independently."""
    doc, raw = benched.doc, benched.raw
    rows = [doc["baseline"], *doc["results"]]
    assert sorted(raw) == sorted(r["artifact"] for r in rows)
    baseline_p50 = statistics.median(raw[doc["baseline"]["artifact"]])
    for r in rows:
        samples = raw[r["artifact"]]
        lat = r["latency_ms"]
        assert len(samples) == r["iterations"] == 12
        assert lat["p50"] == pytest.approx(statistics.median(samples), abs=1e-3)
        assert lat["p90"] == pytest.approx(_quantile(samples, 0.90), abs=1e-3)
        assert lat["p99"] == pytest.approx(_quantile(samples, 0.99), abs=1e-3)
        assert lat["p99"] == pytest.approx(statistics.quantiles(samples, n=100, method="inclusive")[98], abs=1e-3)
        assert lat["mean"] == pytest.approx(sum(samples) / len(samples), abs=1e-3)
        assert lat["min"] == pytest.approx(min(samples), abs=1e-3)
        # the document rounds: throughput to 3 decimals, the ratio to 4, GFLOP/s to 2
        assert r["throughput_ips"] == pytest.approx(r["batch"] * 1000 / (sum(samples) / len(samples)),
                                                    rel=1e-4, abs=6e-4)
        assert r["ratio_to_eager"] == pytest.approx(statistics.median(samples) / baseline_p50, rel=1e-4, abs=6e-5)
        assert r["gflops"] == pytest.approx(2 * r["macs_per_image"] * r["batch"] / statistics.median(samples) / 1e6,
                                            rel=1e-4, abs=6e-3)


# ---------------------------------------------------------------------------- --force, stale temporaries


def test_an_existing_artifact_is_kept_without_force(ema_force):
    """README: "An existing artifact is kept unless `--force`": exit 2 naming --force, nothing rewritten."""
    refused = ema_force.refused
    assert refused.exit_code == 2, _said(refused)
    assert f"{ema_force.path} already exists; pass --force to overwrite" in refused.output
    assert ema_force.after_refusal == ema_force.before


def test_force_overwrites_the_artifact_and_its_manifest(ema_force, ema_checkpoints):
    from shvit_edge.manifest import read_manifest

    forced = ema_force.forced
    assert forced.exit_code == 0, _said(forced)
    (a,) = json.loads(forced.stdout)["artifacts"]
    assert Path(a["path"]) == ema_force.path
    now = _sha256(ema_force.path)
    assert now != ema_force.before["sha256"], "--force left the old artifact in place"
    assert ema_force.path.stat().st_mtime_ns != ema_force.before["mtime_ns"]
    manifest = read_manifest(Path(a["manifest"]))
    assert manifest.artifact.sha256 == a["sha256"] == now
    assert manifest.artifact.size_bytes == ema_force.path.stat().st_size
    assert manifest.checkpoint.path == str(ema_checkpoints["ema.pth"].resolve())
    assert manifest.checkpoint.sha256 == _sha256(ema_checkpoints["ema.pth"])
    assert manifest.verification is None  # the old artifact's verify result went with it


def test_the_next_export_removes_a_killed_exports_stale_temporaries(ema_force):
    """README: "after SIGKILL the next export into that folder removes the stale temporary"; atomic.py: another
    host's or PID namespace's temporaries go once they are more than 24 h old, and a live one stays."""
    assert ema_force.forced.exit_code == 0, _said(ema_force.forced)
    left = sorted(p.name for p in ema_force.out.iterdir())
    for path in ema_force.removed:
        assert not path.exists(), f"{path.name} is still there: {left}"
    for path in ema_force.kept:
        assert path.exists(), f"{path.name} was removed: {left}"
    assert sorted(n for n in left if not n.startswith(".shvit-edge-tmp-")) == \
        [ema_force.path.name, ema_force.path.name + ".json"]


# -------------------------------------------------------------------------------------------------- --ema


def test_ema_is_carried_through_export_manifest_and_verify(ema_force, ema_checkpoints, images_dir):
    """`--ema` exports the EMA weights, the manifest says so, and verify rebuilds its reference from the EMA
    weights: the artifact passes against them, and fails against the other weights of the same file."""
    import shvit_edge
    from shvit_edge.backends.base import get_backend
    from shvit_edge.manifest import read_manifest
    from shvit_edge.parity.metrics import compare

    assert ema_force.forced.exit_code == 0, _said(ema_force.forced)
    path = ema_force.path
    manifest = read_manifest(path.with_name(path.name + ".json"))
    assert manifest.checkpoint.use_ema is True

    ema = shvit_edge.load_checkpoint(ema_checkpoints["ema.pth"], use_ema=True)
    plain = shvit_edge.load_checkpoint(ema_checkpoints["ema.pth"])
    assert ema.used_ema and ema.has_ema and not plain.used_ema
    x = _photos()
    assert_reacts(ema.model, x)
    runner = get_backend("onnx").load(path, manifest)
    out = np.concatenate([runner(x[i:i + 1].numpy()) for i in range(len(x))])  # batch 1
    with torch.no_grad():
        assert compare(out, ema.model(x).numpy()).cosine >= PARITY_COSINE
        assert compare(out, plain.model(x).numpy()).cosine < 0.99  # the two weight sets really differ

    result = _cli("verify", path, "--images", images_dir, "--samples", "0", "--json")
    assert result.exit_code == 0, _said(result)
    (r,) = json.loads(result.stdout)["results"]
    assert r["status"] == "pass" and r["metrics"]["logits"]["cosine"] >= PARITY_COSINE, r
    # the same checkpoint with model and model_ema exchanged: verify takes model_ema as the manifest says,
    # now the other weights, and the artifact fails
    swapped = _cli("verify", path, "--checkpoint", ema_checkpoints["swapped.pth"], "--images", images_dir,
                   "--samples", "0", "--json")
    assert swapped.exit_code == 1, _said(swapped)
    (s,) = json.loads(swapped.stdout)["results"]
    assert s["status"] == "fail", s
