"""Regressions of a hostile try of export: paths built from data, the package digest, non-float weights, the
profile's own tolerances and opset, relative checkpoints, unwritable output folders, orphaned workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from conftest import child_pids, is_running
from shvit_edge.atomic import TMP_PREFIX, child_path, sha256_of
from shvit_edge.cli import cli
from shvit_edge.errors import UsageError
from shvit_edge.manifest import read_manifest
from shvit_edge.targets import profiles_dir


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(result) -> str:
    """The error a usage/input failure prints: one line, no traceback."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("Error")]
    assert len(lines) == 1, result.output
    return lines[0]


def user_profile(tmp_path: Path, name: str, edits: dict[str, str], base: str = "host-onnx") -> Path:
    """The shipped ``base`` profile with ``key = value`` lines replaced (TOML source edits)."""
    lines = (profiles_dir() / f"{base}.toml").read_text().splitlines()
    out = []
    for line in lines:
        key = line.split("=", 1)[0].strip()
        out.append(f"{key} = {edits.pop(key)}" if key in edits and "=" in line else line)
    assert not edits, f"keys not found in {base}.toml: {edits}"
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(out) + "\n")
    return path


# ----------------------------------------------------------------------------------- paths built from data


@pytest.mark.parametrize("name", ["../x.onnx", "a/b.onnx", "a\\b.onnx", "..", ".", "", "fp16.mlpackage/../../E",
                                  "x..onnx", f"{TMP_PREFIX}1-x", "a\0b", "a\nb", "x" * 300])
def test_an_artifact_name_must_be_a_plain_file_name(tmp_path, name):
    with pytest.raises(UsageError, match="plain file name"):
        child_path(tmp_path, name)


def test_a_plain_artifact_name_is_inside_the_folder(tmp_path):
    assert child_path(tmp_path, "shvit_s1_224x224_my-phone.v2.onnx") == tmp_path / "shvit_s1_224x224_my-phone.v2.onnx"


def test_a_profile_name_cannot_write_outside_the_output_folder(tmp_path):
    """The hostile profile of the report: run into an --out holding a Core ML package, its name climbs out."""
    work = tmp_path / "work"
    out = work / "out"
    (out / "shvit_s1_64x64_fp16.mlpackage").mkdir(parents=True)
    profile = user_profile(tmp_path, "evil", {"name": '"fp16.mlpackage/../../../ESCAPED"'})
    result = invoke("export", "--target", profile, "--variant", "shvit_s1", "--resolution", "64", "--out", out)
    assert "plain" in one_line_error(result)
    assert not list(tmp_path.rglob("ESCAPED*"))
    assert [p.name for p in out.iterdir()] == ["shvit_s1_64x64_fp16.mlpackage"]


# ------------------------------------------------------------------------------------------ package digest


def test_merging_two_files_of_a_package_changes_its_digest(tmp_path):
    """The unframed digest (path NUL bytes, per file) let the last file, with its name, be appended to the one
    before and deleted without changing the digest; framed entries tell the two apart."""
    pkg = tmp_path / "m.mlpackage"
    (pkg / "Data").mkdir(parents=True)
    (pkg / "Data" / "a.bin").write_bytes(b"weights-a")
    (pkg / "Data" / "b.bin").write_bytes(b"weights-b")
    before = sha256_of(pkg)
    (pkg / "Data" / "a.bin").write_bytes(b"weights-a" + b"Data/b.bin\0" + b"weights-b")
    (pkg / "Data" / "b.bin").unlink()
    assert sha256_of(pkg) != before


def test_a_package_holding_a_symlink_or_fifo_is_refused(tmp_path):
    from shvit_edge.errors import InputError

    pkg = tmp_path / "m.mlpackage"
    pkg.mkdir()
    (pkg / "w.bin").write_bytes(b"1")
    (pkg / "link").symlink_to("/etc/hostname")
    with pytest.raises(InputError, match="link"):
        sha256_of(pkg)
    (pkg / "link").unlink()
    os.mkfifo(pkg / "pipe")
    with pytest.raises(InputError, match="pipe"):
        sha256_of(pkg)
    with pytest.raises(InputError, match="not a regular file"):
        sha256_of(pkg / "pipe")


# ------------------------------------------------------------------------------------------- weights


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64, torch.uint8])
def test_non_float_weights_are_refused_naming_the_first_key(tmp_path, official_pth, dtype):
    state = torch.load(official_pth, map_location="cpu", weights_only=False)["model"]
    first = next(k for k, v in state.items() if v.is_floating_point())
    state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
    path = tmp_path / "cast.pth"
    torch.save(state, path)
    line = one_line_error(invoke("inspect", path))
    assert first in line and str(dtype).replace("torch.", "") in line and "not floating point" in line


def test_float16_weights_still_load(tmp_path, official_pth):
    state = torch.load(official_pth, map_location="cpu", weights_only=False)["model"]
    path = tmp_path / "half.pth"
    torch.save({k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}, path)
    result = invoke("inspect", path, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["dtype"] == "float16"


# ------------------------------------------------------------------- a user's profile: tolerances, opset


@pytest.fixture(scope="module")
def strict_export(tmp_path_factory, official_pth):
    """S1 at 64x64 to ONNX with a user's profile: fp32 max_abs 1e-12 and opset 19, from a relative checkpoint
    path (exported from another folder than the one verify runs in)."""
    tmp = tmp_path_factory.mktemp("strict")
    profile = user_profile(tmp, "strict-host", {"name": '"strict-host"', "max_abs": "1e-12", "opset": "19"})
    work = tmp / "elsewhere"
    work.mkdir()
    (work / "ckpt.pth").symlink_to(official_pth)
    cwd = Path.cwd()
    os.chdir(work)
    try:
        result = invoke("export", "--target", profile, "--checkpoint", "ckpt.pth", "--resolution", "64",
                        "--out", tmp / "out", "--json")
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output
    (artifact,) = json.loads(result.stdout)["artifacts"]
    return Path(artifact["path"])


def test_the_manifest_records_the_profile_tolerances_and_verify_judges_by_them(strict_export):
    manifest = read_manifest(Path(f"{strict_export}.json"))
    assert manifest.tolerances["fp32"].max_abs == 1e-12
    result = invoke("verify", strict_export, "--samples", "2", "--json")
    doc = json.loads(result.stdout)
    (r,) = doc["results"]
    assert r["tolerances"]["max_abs"] == 1e-12
    assert r["status"] == "fail" and "max abs" in r["reason"], r
    assert result.exit_code == 1


def test_the_manifest_records_the_opset_the_file_holds(strict_export):
    import onnx

    model = onnx.load(str(strict_export))
    written = next(o.version for o in model.opset_import if o.domain == "")
    assert written == 19
    assert read_manifest(Path(f"{strict_export}.json")).details["opset"] == written


@pytest.mark.parametrize("opset", ["13", "999", "-3", "18.5"])
def test_an_opset_the_exporter_would_not_write_is_refused(tmp_path, opset):
    profile = user_profile(tmp_path, "odd", {"name": '"odd"', "opset": opset})
    line = one_line_error(invoke("export", "--target", profile, "--variant", "shvit_s1", "--out", tmp_path / "o"))
    assert "opset" in line
    assert not (tmp_path / "o").exists()


def test_a_relative_checkpoint_is_stored_resolved(strict_export, official_pth):
    path = Path(read_manifest(Path(f"{strict_export}.json")).checkpoint.path)
    assert path.is_absolute() and path.resolve() == official_pth.resolve()


# --------------------------------------------------------------------------------- output folder, workers


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder on a read-only file system (root ignores permission bits, so a mode would prove nothing)."""
    mount = tmp_path / "ro"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_an_output_folder_that_cannot_be_made_is_a_one_line_error(read_only_dir):
    out = read_only_dir / "new" / "nested"
    line = one_line_error(invoke("export", "--target", "onnx", "--variant", "shvit_s1", "--resolution", "64",
                                 "--out", out))
    assert "cannot create" in line and str(out) in line


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads child processes from /proc")
def test_export_workers_die_with_a_killed_parent_and_publish_nothing(tmp_path):
    """This process takes ExecuTorch (the longest); the worker takes TFLite, then ONNX. SIGKILL of this process
    in the middle kills the worker too (it used to publish its artifact afterwards, or time on for minutes)."""
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "shvit_edge.cli", "export", "--target", "executorch,tflite,onnx", "--jobs", "2",
         "--variant", "shvit_s1", "--resolution", "64", "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    workers: list[int] = []
    while proc.poll() is None and time.monotonic() < deadline:
        workers = [c for c in child_pids(proc.pid) if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
        if workers and out.exists():
            break
        time.sleep(0.1)
    assert workers and proc.poll() is None, "no worker started"
    time.sleep(6.0)  # the worker has its model and is converting
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while any(is_running(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(is_running(w) for w in workers)
    time.sleep(3.0)
    assert [p.name for p in out.iterdir() if not p.name.startswith(TMP_PREFIX)] == []


@pytest.mark.parametrize("make", ["fifo", "zero"])
def test_a_checkpoint_or_labels_file_that_is_no_regular_file_is_refused_without_hanging(tmp_path, make):
    path = tmp_path / "special"
    if make == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    assert "not a regular file" in one_line_error(invoke("inspect", path))
    line = one_line_error(invoke("export", "--target", "onnx", "--variant", "shvit_s1", "--labels", path,
                                 "--out", tmp_path / "out"))
    assert "not a regular file" in line
