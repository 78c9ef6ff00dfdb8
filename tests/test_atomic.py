"""Nothing half-written: atomic outputs, interrupted exports, stale temporaries."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import child_pids, is_running
from shvit_edge.atomic import (FOREIGN_STALE_SECONDS, TMP_PREFIX, atomic_outputs, remove_stale_temporaries,
                               sha256_of, temporary_path)


def test_outputs_appear_only_when_complete(tmp_path):
    a, b = tmp_path / "model.bin", tmp_path / "model.bin.json"
    with atomic_outputs(a, b) as (ta, tb):
        ta.write_bytes(b"weights")
        tb.write_text("{}")
        assert not a.exists() and not b.exists()
        assert ta.name.startswith(TMP_PREFIX)
    assert a.read_bytes() == b"weights" and b.read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)] == []


@pytest.mark.parametrize("error", [RuntimeError("converter crashed"), KeyboardInterrupt()])
def test_a_failure_or_interrupt_leaves_nothing(tmp_path, error):
    final = tmp_path / "model.mlpackage"
    with pytest.raises(type(error)):
        with atomic_outputs(final) as (tmp,):
            (tmp / "Data").mkdir(parents=True)
            (tmp / "Data" / "weights.bin").write_bytes(b"x" * 100)
            raise error
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path):
    final = tmp_path / "pkg"
    final.mkdir()
    (final / "old").write_text("old")
    with pytest.raises(FileExistsError):
        with atomic_outputs(final) as (tmp,):
            tmp.mkdir()
    assert (final / "old").exists()
    with atomic_outputs(final, overwrite=True) as (tmp,):
        tmp.mkdir()
        (tmp / "new").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"]


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    ours = temporary_path(tmp_path / "x").name[len(TMP_PREFIX):].split("-")[0].split(".")[1]
    stale = tmp_path / f"{TMP_PREFIX}{dead.stdout.strip()}.{ours}-shvit_s1_224x224.onnx"
    stale.write_bytes(b"half")
    live = temporary_path(tmp_path / "other.onnx")
    live.write_bytes(b"in progress")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and live.exists()


def test_temporaries_of_another_pid_namespace_are_not_judged_by_pid(tmp_path):
    """A pid from another container or host means nothing here: its temporary stays (dead here, it may be
    alive there) until it is a day old; an old-style name without a namespace is treated the same way."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    foreign = tmp_path / f"{TMP_PREFIX}{dead}.0123456789ab-model.onnx"
    legacy = tmp_path / f"{TMP_PREFIX}{dead}-model.onnx"
    old = tmp_path / f"{TMP_PREFIX}{dead}.0123456789ab-old.onnx"
    for path in (foreign, legacy, old):
        path.write_bytes(b"in progress elsewhere")
    day_ago = time.time() - FOREIGN_STALE_SECONDS - 60
    os.utime(old, (day_ago, day_ago))
    assert remove_stale_temporaries(tmp_path) == [old]
    assert foreign.exists() and legacy.exists()


def test_folder_sha256_covers_names_and_contents(tmp_path):
    pkg = tmp_path / "a.mlpackage"
    (pkg / "Data").mkdir(parents=True)
    (pkg / "Data" / "w.bin").write_bytes(b"1")
    (pkg / "Manifest.json").write_text("{}")
    first = sha256_of(pkg)
    (pkg / "Data" / "w.bin").write_bytes(b"2")
    assert sha256_of(pkg) != first
    (pkg / "Data" / "w.bin").write_bytes(b"1")
    assert sha256_of(pkg) == first
    (pkg / "Data" / "w.bin").rename(pkg / "Data" / "v.bin")
    assert sha256_of(pkg) != first


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_killing_an_export_midway_leaves_no_artifact(tmp_path, sig):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "shvit_edge.cli", "export", "--target", "onnx", "--variant", "shvit_s1",
         "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # wait until the export is under way (the output folder is made right before the first backend starts)
    deadline = time.monotonic() + 120
    while not out.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"export ended before it could be interrupted: {proc.communicate()}"
    time.sleep(1.0)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == -sig, stderr  # ended by the signal, after its cleanups (a shell shows 128+sig)
    assert "Traceback" not in stderr
    assert list(out.iterdir()) == []


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads child processes from /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_killing_a_parallel_export_stops_its_workers_and_leaves_nothing(tmp_path, sig):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "shvit_edge.cli", "export", "--target", "onnx,tflite", "--jobs", "2",
         "--variant", "shvit_s1", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    workers: list[int] = []
    while proc.poll() is None and time.monotonic() < deadline:
        workers = [c for c in child_pids(proc.pid) if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
        if workers:
            break
        time.sleep(0.1)
    assert workers and proc.poll() is None, f"no worker started: {proc.communicate()}"
    time.sleep(8.0)  # the worker is into its export
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == -sig, stderr  # ended by the signal, after its cleanups (a shell shows 128+sig)
    assert "Traceback" not in stderr
    assert not any(is_running(w) for w in workers)
    # The interrupted target leaves nothing. ONNX, the worker's, can finish in the 8 s before the signal
    # (5-7 s on a fast day here); a finished target stays, as with --target all, and then it is whole.
    left = sorted(p.name for p in out.iterdir())
    assert not [name for name in left if name.startswith(TMP_PREFIX)], left
    assert "shvit_s1_224x224.tflite" not in left and "shvit_s1_224x224.tflite.json" not in left, left
    assert left in ([], ["shvit_s1_224x224.onnx", "shvit_s1_224x224.onnx.json"]), left
    if left:
        from shvit_edge.manifest import read_manifest

        assert read_manifest(out / left[1]).artifact.sha256 == sha256_of(out / left[0])


def test_an_interrupt_a_library_swallowed_still_stops_the_publish(tmp_path):
    """litert-torch's converter can swallow the exception a SIGTERM handler raises (measured: the export then
    finished with exit 0); the request is remembered and the artifact is not published."""
    from shvit_edge.atomic import Terminated, sigterm_as_interrupt

    with pytest.raises(Terminated), sigterm_as_interrupt():
        with atomic_outputs(tmp_path / "model.tflite") as (tmp,):
            tmp.write_bytes(b"converted")
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1.0)  # the handler raises in here
            except Terminated:
                pass  # what the library did
    assert list(tmp_path.iterdir()) == []
