"""Verify hardened: a runtime that aborts fails its artifact alone; manifests cannot make verify run their pickles,
hang on a FIFO, pass a constant model, drop a user's tolerances or lose results in a read-only folder; numbers
and paths are checked and shown as data."""

from __future__ import annotations

import inspect
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from shvit_edge.atomic import FOLDER_SHA256_METHOD, LEGACY_FOLDER_SHA256_METHOD, sha256_of
from shvit_edge.cli import cli
from shvit_edge.errors import UsageError
from shvit_edge.export import ExportOptions, export, load_source, resolve_targets
from shvit_edge.manifest import read_manifest
from shvit_edge.parity.metrics import ParityMetrics, compare, constancy
from shvit_edge.targets import Tolerance
from shvit_edge.verify import VerifyOptions, VerifyResult, judge, verify

from conftest import ROOT, child_pids

TARGETS = ("coreml", "executorch", "onnx", "tflite")
NAMES = {"coreml": "shvit_s1_64x64_fp16.mlpackage", "executorch": "shvit_s1_64x64.pte",
         "onnx": "shvit_s1_64x64.onnx", "tflite": "shvit_s1_64x64.tflite"}
ONNX = NAMES["onnx"]


@pytest.fixture(scope="session")
def four(untrained_s1_64):
    """Untrained S1 (seed 0) at 64x64 for every target, in one folder (shared: copy before writing)."""
    assert sorted(p.name for p in untrained_s1_64.iterdir() if not p.name.endswith(".json")) == \
        sorted(NAMES.values())
    return untrained_s1_64


@pytest.fixture(scope="session")
def seed0_checkpoint(tmp_path_factory):
    """The weights of the untrained seed-0 artifacts as a checkpoint file."""
    path = tmp_path_factory.mktemp("ckpt") / "seed0.pth"
    torch.save(load_source(variant="shvit_s1", checkpoint=None).model.state_dict(), path)
    return path


def copy_of(four, tmp_path, *names) -> Path:
    """A private copy (verify writes the manifests) of the given artifacts, or of all."""
    folder = tmp_path / "artifacts"
    folder.mkdir(parents=True)
    for name in names or NAMES.values():
        src = four / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, folder / name)
        shutil.copy2(four / f"{name}.json", folder / f"{name}.json")
    return folder


def edit_manifest(artifact: Path, edit) -> None:
    path = artifact.with_name(artifact.name + ".json")
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def invoke(*args, **kwargs):
    return CliRunner().invoke(cli, ["verify", *map(str, args)], **kwargs)


def run_cli(*args, timeout=600):
    """``shvit-edge verify`` in a process of its own: an abort or a hang of the old code fails the test, not
    the test session."""
    return subprocess.run([sys.executable, "-m", "shvit_edge.cli", "verify", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def corrupt(artifact: Path, seed: int = 0) -> None:
    """Garbage in place of the artifact's bytes (a package: of its model spec), with the manifest's sha256 and
    size updated to match, so the runtime really gets the garbage."""
    target = artifact / "Data" / "com.apple.CoreML" / "model.mlmodel" if artifact.is_dir() else artifact
    target.write_bytes(np.random.default_rng(seed).bytes(target.stat().st_size))

    def update(doc):
        doc["artifact"]["sha256"] = sha256_of(artifact)
        if not artifact.is_dir():
            doc["artifact"]["size_bytes"] = artifact.stat().st_size

    edit_manifest(artifact, update)


# --- 10 (and 1): one corrupted artifact fails alone ---------------------------------------------------------------

@pytest.mark.parametrize("broken", TARGETS)
def test_a_corrupted_artifact_fails_and_the_others_still_pass(four, tmp_path, broken):
    folder = copy_of(four, tmp_path)
    corrupt(folder / NAMES[broken])
    result = run_cli(folder, "--samples", "2", "--json")
    assert result.returncode == 1, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    doc = json.loads(result.stdout)
    statuses = {r["target"]: r["status"] for r in doc["results"]}
    expected = {t: "pass" for t in TARGETS}
    expected[broken] = "fail"
    assert statuses == expected, doc
    (bad,) = [r for r in doc["results"] if r["target"] == broken]
    assert bad["metrics"] == {} and bad["reason"], bad
    assert doc["warnings"] == []
    for r in doc["results"]:  # every result, the failed one's too, is recorded in its manifest
        verification = read_manifest(Path(r["artifact"] + ".json")).verification
        assert verification["results"][0]["status"] == r["status"]


def test_a_runtime_that_aborts_is_reported_with_its_signal_and_last_error(four, tmp_path):
    folder = copy_of(four, tmp_path, NAMES["executorch"], ONNX)
    corrupt(folder / NAMES["executorch"])
    result = run_cli(folder, "--samples", "2", "--json")
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    by_target = {r["target"]: r for r in json.loads(result.stdout)["results"]}
    pte, onnx = by_target["executorch"], by_target["onnx"]
    assert onnx["status"] == "pass"
    assert pte["status"] == "fail" and "the runtime crashed: killed by SIGABRT" in pte["reason"], pte
    assert "its last error output:" in pte["reason"] and "Error" in pte["reason"].split("its last error output:")[1]


def test_a_dead_child_is_explained_by_its_signal_its_step_and_that_steps_last_error(tmp_path):
    from shvit_edge.verify_worker import ChildReport, _last_error

    log = tmp_path / "log.txt"
    before = b"Failed to load some optional library\nloading ...\n"
    log.write_bytes(before + b"W1202 06:05:48 something will be an error in a future release\n"
                              b"[program.cpp:168] terminate called\n  what():  RuntimeError: bad magic\nbye\n")
    assert _last_error(log) == "what():  RuntimeError: bad magic"
    log.write_bytes(before + b"nothing that looks wrong\n")
    assert _last_error(log, offset=len(before)) == "nothing that looks wrong"  # the step's own output only
    report = ChildReport({"stage": "loading the artifact"}, -11, {}, "Segmentation fault")
    assert report.ended() == ("the runtime crashed: killed by SIGSEGV while loading the artifact; its last error "
                              "output: Segmentation fault")
    assert ChildReport({"stage": "starting"}, 1, {}, "").ended() == \
        "the runtime process ended with exit code 1 while starting"


def test_the_runtime_child_lets_the_output_of_every_module_of_a_backend_package_through(monkeypatch):
    """In the child, backends/_quiet.py's ``quiet`` is replaced wherever a backend's code looks it up, or an
    abort's own message is lost with the process: Core ML is a package whose modules each import ``quiet``."""
    from shvit_edge.backends import _quiet, coreml
    from shvit_edge.verify_worker import _let_through, _unquiet

    package = [m for name, m in sys.modules.items() if name.split(".")[:3] == ["shvit_edge", "backends", "coreml"]]
    for module in (*package, _quiet):
        if hasattr(module, "quiet"):
            monkeypatch.setattr(module, "quiet", module.quiet)  # put back after the test
    _unquiet(coreml)
    functions = [getattr(coreml, name) for name in coreml.__all__ if inspect.isfunction(getattr(coreml, name))]
    users = {f.__module__ for f in functions if "quiet" in f.__globals__}
    assert {"shvit_edge.backends.coreml.convert", "shvit_edge.backends.coreml.inspect"} <= users
    assert all(f.__globals__["quiet"] is _let_through for f in functions if "quiet" in f.__globals__)
    assert coreml.quiet is _let_through and _quiet.quiet is _let_through


def test_runtime_children_are_gone_after_verify(four, tmp_path):
    folder = copy_of(four, tmp_path, ONNX)
    results = verify([folder], VerifyOptions(samples=2))
    assert [r.status for r in results] == ["pass"]
    def cmdline(pid: int) -> str:
        try:
            return Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
        except OSError:  # ended meanwhile
            return ""

    # this test's own children only: an xdist worker may hold others (another test's export pool)
    assert [pid for pid in child_pids(os.getpid()) if "verify_worker" in cmdline(pid)] == []


# --- 2: --trust-checkpoint applies to --checkpoint only ---------------------------------------------------------

class _Payload:
    """Unpickling this creates the marker file: the proof that a pickle ran."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def malicious(tmp_path):
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = str(marker)
    path = tmp_path / "evil.pth"
    torch.save({"model": payload}, path)
    assert not marker.exists()
    return path, marker


def _names_checkpoint(artifact: Path, path, sha256=None) -> None:
    def edit(doc):
        doc["untrained"] = False
        doc["checkpoint"].update(path=str(path), sha256=sha256, seed=None)

    edit_manifest(artifact, edit)


def test_trust_checkpoint_without_checkpoint_is_a_usage_error_and_runs_no_pickle(four, tmp_path, malicious):
    evil, marker = malicious
    folder = copy_of(four, tmp_path, ONNX)
    _names_checkpoint(folder / ONNX, evil)
    result = invoke(folder / ONNX, "--samples", "2", "--trust-checkpoint")
    assert not marker.exists()
    assert result.exit_code == 2, result.output
    assert "--trust-checkpoint applies to --checkpoint FILE only" in result.output
    with pytest.raises(UsageError, match="--checkpoint FILE only"):
        verify([folder / ONNX], VerifyOptions(samples=2, trust_checkpoint=True))
    assert not marker.exists()


def test_a_checkpoint_a_manifest_names_is_always_loaded_weights_only(four, tmp_path, malicious, seed0_checkpoint):
    evil, marker = malicious
    folder = copy_of(four, tmp_path, ONNX)
    _names_checkpoint(folder / ONNX, evil)
    result = invoke(folder / ONNX, "--samples", "2")
    assert not marker.exists()
    assert result.exit_code == 2 and "allow-list" in result.output, result.output
    # trusting another file with --checkpoint does not extend to the manifest's
    result = invoke(folder / ONNX, "--samples", "2", "--checkpoint", seed0_checkpoint, "--trust-checkpoint",
                    "--json")
    assert result.exit_code == 0, result.output
    assert f"--trust-checkpoint: {seed0_checkpoint} is loaded" in result.stderr.replace("\n", "")
    assert json.loads(result.stdout)["results"][0]["status"] == "pass"
    assert not marker.exists()


# --- 3: a model that ignores its input fails ----------------------------------------------------------------------

@pytest.fixture(scope="session")
def zero_model_onnx(tmp_path_factory):
    """S1 with every weight and buffer zero (its output is the same for every input) as an ONNX artifact."""
    folder = tmp_path_factory.mktemp("zero")
    model = load_source(variant="shvit_s1", checkpoint=None).model
    state = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    torch.save(state, folder / "zero.pth")
    source = load_source(variant=None, checkpoint=str(folder / "zero.pth"))
    (artifact,) = export(source, resolve_targets("onnx"), ExportOptions(resolution=(64, 64)), folder / "out").artifacts
    return artifact.path


def test_a_model_whose_output_ignores_its_input_fails(zero_model_onnx, tmp_path):
    folder = tmp_path / "zero"
    shutil.copytree(zero_model_onnx.parent, folder)
    result = invoke(folder / zero_model_onnx.name, "--samples", "3", "--json")
    assert result.exit_code == 1, result.output
    (r,) = json.loads(result.stdout)["results"]
    assert r["status"] == "fail", r
    assert "the reference model's output does not depend on its input" in r["reason"]
    assert "the artifact's output does not depend on its input" in r["reason"]
    metrics = r["metrics"]["logits"]
    assert metrics["cosine"] == 1.0 and metrics["output_constant"] and metrics["reference_constant"]


def test_constancy_is_measured_in_the_metrics_and_decided_in_the_judge():
    rng = np.random.default_rng(0)
    reacting = rng.standard_normal((4, 10))
    same_rows = np.repeat(reacting[:1], 4, axis=0)
    assert constancy(reacting) is None
    assert constancy(np.full((4, 10), 0.1)) == "all values equal"
    assert constancy(np.full((1, 10), 0.0)) == "all values equal"
    assert constancy(same_rows) == "the same output for all 4 inputs"
    assert constancy(same_rows[:1]) is None  # one input: a row that varies says nothing about the input
    # a model that reacts only a little (the official fixture's cosine 0.9999 between inputs) still reacts
    barely = same_rows + 1e-3 * rng.standard_normal(same_rows.shape)
    assert constancy(barely) is None
    loose = Tolerance(cosine=-1.0, max_abs=1e9, top1_agreement=0.0)
    assert judge(compare(reacting, reacting), loose) == []
    constant_out = judge(compare(same_rows, reacting), loose)
    assert constant_out == ["the artifact's output does not depend on its input (the same output for all 4 inputs)"]
    assert "reference model's output does not depend" in judge(compare(same_rows, same_rows), loose)[0]
    # a metrics record from before these fields (Core ML's export-time estimate) still reads, and so does one
    # whose every None a reader turned into infinity
    record = compare(reacting, reacting).as_dict()
    assert record["output_constant"] == record["reference_constant"] == ""
    old = {k: v for k, v in record.items() if not k.endswith("_constant")}
    assert judge(ParityMetrics(**old), loose) == []
    assert judge(ParityMetrics(**{k: math.inf if v is None else v for k, v in record.items()}), loose) == []


# --- 4: the manifest's tolerances ---------------------------------------------------------------------------------

def test_the_manifests_tolerances_judge_and_flags_apply_on_top(four, tmp_path):
    folder = copy_of(four, tmp_path, ONNX)

    def strict(doc):  # a user's own profile: loose on cosine, no absolute difference at all
        doc["tolerances"] = {"fp32": {"cosine": 0.5, "max_abs": 0.0, "top1_agreement": 1.0, "sqnr_db": None}}

    edit_manifest(folder / ONNX, strict)
    result = invoke(folder / ONNX, "--samples", "2", "--json")
    assert result.exit_code == 1, result.output
    (r,) = json.loads(result.stdout)["results"]
    assert r["status"] == "fail" and "max abs" in r["reason"], r
    assert r["tolerances"] == {"class": "fp32", "cosine": 0.5, "max_abs": 0.0, "top1_agreement": 1.0,
                               "sqnr_db": None, "source": "manifest"}
    result = invoke(folder / ONNX, "--samples", "2", "--max-abs", "1", "--json")
    assert result.exit_code == 0, result.output
    (r,) = json.loads(result.stdout)["results"]
    assert r["tolerances"]["max_abs"] == 1.0 and r["tolerances"]["cosine"] == 0.5


@pytest.mark.parametrize("profile,judged_by", [("host-onnx", "profile host-onnx"),
                                               ("my-own-profile", "the default profile host-onnx")])
def test_an_old_manifest_without_tolerances_falls_back_to_its_profile_and_says_so(four, tmp_path, profile,
                                                                                  judged_by):
    folder = copy_of(four, tmp_path, ONNX)

    def old(doc):
        doc.update(tolerances=None, profile=profile)

    edit_manifest(folder / ONNX, old)
    result = invoke(folder / ONNX, "--samples", "2", "--json")
    assert result.exit_code == 0, result.output
    (r,) = json.loads(result.stdout)["results"]
    assert "the manifest records no tolerances" in r["reason"] and judged_by in r["reason"], r
    assert r["tolerances"]["source"] == "profile host-onnx"


def test_tolerances_in_a_manifest_are_checked_against_their_bounds(four, tmp_path):
    folder = copy_of(four, tmp_path, ONNX)

    def nan(doc):  # json writes NaN literally, and Python reads it back; every comparison with NaN is False
        doc["tolerances"]["fp32"]["cosine"] = float("nan")

    edit_manifest(folder / ONNX, nan)
    result = invoke(folder / ONNX, "--samples", "2", "--json")
    assert result.exit_code == 2, result.output
    assert "tolerances.fp32.cosine must be a finite number" in result.output and "Traceback" not in result.output


def test_tolerances_are_checked_however_the_manifest_was_made(four):
    import dataclasses

    from shvit_edge.errors import InputError
    from shvit_edge.verify import _tolerance

    manifest = read_manifest(four / f"{ONNX}.json")
    bad = dataclasses.replace(manifest, tolerances={"fp32": Tolerance(cosine=math.nan, max_abs=0.1,
                                                                       top1_agreement=1.0)})
    with pytest.raises(InputError, match="tolerances.fp32.cosine must be a finite number"):
        _tolerance(bad, four / f"{ONNX}.json", {})
    tolerance, source, note = _tolerance(manifest, four / f"{ONNX}.json", {"cosine": 0.5})
    assert (tolerance.cosine, source, note) == (0.5, "manifest", "")


# --- 5: a manifest that cannot be written ---------------------------------------------------------------------------

def test_results_are_printed_when_the_manifest_cannot_be_updated(four, tmp_path, monkeypatch):
    import shvit_edge.verify as verify_module

    folder = copy_of(four, tmp_path, ONNX)

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(verify_module, "atomic_outputs", read_only)
    result = invoke(folder / ONNX, "--samples", "2", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [r["status"] for r in doc["results"]] == ["pass"]
    (warning,) = doc["warnings"]
    assert "could not be updated" in warning and "Permission denied" in warning
    assert "could not be updated" in result.stderr
    result = invoke(folder / ONNX, "--samples", "2")  # the table too
    assert result.exit_code == 0 and "pass" in result.stdout and "could not be updated" in result.stderr
    warnings = []
    (r,) = verify([folder / ONNX], VerifyOptions(samples=2), warn=warnings.append)
    assert r.status == "pass" and len(warnings) == 1
    assert read_manifest(folder / f"{ONNX}.json").verification is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder(four, tmp_path):
    folder = copy_of(four, tmp_path, ONNX)
    folder.chmod(0o555)
    try:
        result = invoke(folder / ONNX, "--samples", "2", "--json")
    finally:
        folder.chmod(0o755)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["warnings"]


# --- 6: a relative checkpoint path ----------------------------------------------------------------------------------

def test_a_relative_checkpoint_path_is_found_beside_the_manifest(four, tmp_path, seed0_checkpoint, monkeypatch):
    folder = copy_of(four, tmp_path, ONNX)
    shutil.copy2(seed0_checkpoint, folder / "weights.pth")
    _names_checkpoint(folder / ONNX, "weights.pth", sha256=sha256_of(seed0_checkpoint))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = invoke(folder / ONNX, "--samples", "2", "--json")
    assert result.exit_code == 0, result.output
    (r,) = json.loads(result.stdout)["results"]
    assert r["status"] == "pass" and "sha256 differs" not in r["reason"], r
    (folder / "weights.pth").unlink()
    result = invoke(folder / ONNX, "--samples", "2")
    assert result.exit_code == 2 and "pass --checkpoint" in result.output and "elsewhere" not in result.output


# --- 7: no FIFO, device or forgeable digest -----------------------------------------------------------------------

@pytest.mark.parametrize("make", ["symlink to /dev/zero", "fifo"])
def test_an_artifact_that_is_no_regular_file_is_refused_before_anything_runs(four, tmp_path, make):
    folder = copy_of(four, tmp_path, ONNX)
    odd = folder / "zz.onnx"  # after the good artifact: refused before that one runs, not after
    if make == "fifo":
        os.mkfifo(odd)
    else:
        odd.symlink_to("/dev/zero")
    shutil.copy2(folder / f"{ONNX}.json", folder / "zz.onnx.json")
    for path in (folder, odd, folder / "zz.onnx.json"):
        result = run_cli(path, "--samples", "2", timeout=120)
        assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
        assert read_manifest(folder / f"{ONNX}.json").verification is None  # nothing ran
        assert "not a regular file or folder" in result.stderr and "Traceback" not in result.stderr


def test_a_package_holding_a_symlink_is_refused(four, tmp_path):
    folder = copy_of(four, tmp_path, NAMES["coreml"], ONNX)
    (folder / NAMES["coreml"] / "Data" / "link").symlink_to("/dev/zero")
    result = run_cli(folder, "--samples", "2", timeout=120)
    assert result.returncode == 2 and "not a regular file or folder" in result.stderr, result.stderr[-2000:]
    assert read_manifest(folder / f"{ONNX}.json").verification is None


@pytest.mark.parametrize("method,message", [(LEGACY_FOLDER_SHA256_METHOD, "re-export"),
                                            ("md5 of whatever", "is not one this shvit-edge checks"),
                                            ("sha256 of the file's bytes", "its manifest's sha256 is of a file")])
def test_a_digest_method_that_proves_nothing_fails(four, tmp_path, method, message):
    folder = copy_of(four, tmp_path, NAMES["coreml"])
    package = folder / NAMES["coreml"]
    assert read_manifest(folder / f"{NAMES['coreml']}.json").artifact.sha256_method == FOLDER_SHA256_METHOD
    edit_manifest(package, lambda doc: doc["artifact"].update(sha256_method=method))
    result = invoke(package, "--samples", "2", "--json")
    assert result.exit_code == 1, result.output
    (r,) = json.loads(result.stdout)["results"]
    assert r["status"] == "fail" and r["runtime"] == "none" and message in r["reason"], r


# --- 8: numbers ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["--samples", "100000"], ["--samples", "-1"], ["--seed", "-1"], ["--seed", str(2 ** 70)], ["--threads", "0"],
    ["--threads", "nan"], ["--min-cosine", "nan"], ["--min-cosine", "1.5"], ["--max-abs", "-1"],
    ["--max-abs", "inf"], ["--min-top1", "2"], ["--min-sqnr", "nan"], ["--min-sqnr", "1e300"],
], ids="=".join)
def test_numeric_options_out_of_range_are_usage_errors(four, tmp_path, args):
    folder = copy_of(four, tmp_path, ONNX)
    result = invoke(folder / ONNX, *args)
    assert result.exit_code == 2, result.output
    assert args[0] in result.output and "Traceback" not in result.output
    assert read_manifest(folder / f"{ONNX}.json").verification is None


@pytest.mark.parametrize("options,flag", [
    (VerifyOptions(samples=100000), "--samples"), (VerifyOptions(seed=-1), "--seed"),
    (VerifyOptions(seed=2 ** 70), "--seed"), (VerifyOptions(threads=0), "--threads"),
    (VerifyOptions(overrides={"cosine": float("nan")}), "--min-cosine"),
    (VerifyOptions(overrides={"max_abs": float("inf")}), "--max-abs"),
    (VerifyOptions(overrides={"top1_agreement": 1.5}), "--min-top1"),
], ids=["samples", "seed-negative", "seed-huge", "threads", "cosine-nan", "max-abs-inf", "top1"])
def test_library_options_are_checked_with_the_same_bounds(four, tmp_path, options, flag):
    with pytest.raises(UsageError, match=flag):
        verify([four / ONNX], options)


def test_json_never_holds_nan():
    nan = float("nan")
    result = VerifyResult(artifact="a", target="onnx", runtime="r", status="fail",
                          metrics={"logits": {"cosine": nan, "sqnr_db": math.inf}},
                          tolerances={"cosine": nan}, reason="x")
    doc = json.loads(json.dumps(result.as_json(), allow_nan=False))
    assert doc["metrics"]["logits"] == {"cosine": None, "sqnr_db": None} and doc["tolerances"]["cosine"] is None


# --- 9: data is never rich markup ---------------------------------------------------------------------------------

@pytest.mark.parametrize("parts", [("a[", "x]"), ("models[v1.0]",)])
def test_paths_with_brackets_are_shown_as_they_are(four, tmp_path, parts):
    folder = tmp_path.joinpath(*parts)
    folder.mkdir(parents=True)
    shutil.copy2(four / ONNX, folder / ONNX)
    shutil.copy2(four / f"{ONNX}.json", folder / f"{ONNX}.json")
    result = invoke(folder / ONNX, "--samples", "2", env={"COLUMNS": "1000"})
    assert result.exit_code == 0, (result.output, result.exception)
    assert str(folder / ONNX) in result.stdout


def test_progress_messages_are_not_markup(four, tmp_path, monkeypatch):
    import rich.status
    from rich.text import Text

    folder = tmp_path / "f"
    folder.mkdir()
    shutil.copy2(four / ONNX, folder / "model[bold].onnx")
    shutil.copy2(four / f"{ONNX}.json", folder / "model[bold].onnx.json")
    shown = []
    update = rich.status.Status.update

    def record(self, status=None, **kwargs):
        if status is not None:
            shown.append(status.plain if isinstance(status, Text) else Text.from_markup(status).plain)
        return update(self, status, **kwargs)

    monkeypatch.setattr(rich.status.Status, "update", record)
    result = invoke(folder, "--samples", "2")
    assert result.exit_code == 0, (result.output, result.exception)
    assert any("model[bold].onnx" in s for s in shown), shown
