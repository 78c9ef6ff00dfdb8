"""``shvit-edge device list|run`` against a fake ``adb`` on PATH (tests/fake_adb.py): it maps push, shell and pull
onto a local folder and plays the Android app's instrumentation test with the host harness. The double stands in
for the phone: these tests show the orchestration, its error paths and its cleanup, not a phone's numbers."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import fake_adb
from shvit_edge.cli import cli
from shvit_edge.harness.bundle import bundle_id
from shvit_edge.harness.documents import validate

GOLDEN = Path(__file__).parent / "golden" / "bundle"
PIXEL = ("emulator-5554", "device", "Pixel_8")
TABLET = ("R58N12345", "device", "SM_X710")


def adb_env(tmp_path: Path, devices=(PIXEL,), installed=True, fail=None) -> dict:
    bin_dir = fake_adb.install(tmp_path / "adb", devices, installed=installed, fail=fail)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_ADB_STATE": str(tmp_path / "adb"),
            "ADB": None, "ANDROID_HOME": None, "ANDROID_SDK_ROOT": None}


def invoke(args, env):
    return CliRunner().invoke(cli, [*map(str, args)], env=env)


def calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "adb" / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def device_files(tmp_path: Path) -> list[str]:
    root = tmp_path / "adb" / "fs" / "data" / "local" / "tmp" / "shvit-edge"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output + result.stderr, result.stderr
    return errors[0]


def stored_runs(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return conn.execute("select count(*) from runs").fetchone()[0]


def test_device_run_takes_an_s1_bundle_from_push_to_the_store(s1_bundle, tmp_path):
    """Two devices, --serial picks one; the APKs are installed, the bundle pushed and run, the result pulled,
    the pushed bundle removed, and bundle and result stored with parity judged."""
    env = adb_env(tmp_path, devices=(PIXEL, TABLET), installed=False)
    for apk in ("app.apk", "test.apk"):
        (tmp_path / apk).write_bytes(b"PK fake apk")
    out, db = tmp_path / "result.json", tmp_path / "results.sqlite"
    result = invoke(["device", "run", "--platform", "android", "--bundle", s1_bundle, "--serial", TABLET[0],
                     "--apk", tmp_path / "app.apk", "--apk", tmp_path / "test.apk", "--out", out, "--db", db,
                     "--json"], env)
    assert result.exit_code == 0, result.output + result.stderr
    summary = json.loads(result.stdout)
    doc = json.loads(out.read_text())
    validate(doc, "result", "the pulled result")
    targets = {a["name"]: a["target"] for a in json.loads((s1_bundle / "bundle.json").read_text())["artifacts"]}
    assert sorted(targets[r["artifact"]] for r in doc["runs"]) == ["executorch", "tflite"]
    assert summary["runs"] == {"ok": 2} and summary["parity"] == {"pass": 2}, summary
    assert stored_runs(db) == 2
    log = calls(tmp_path)
    sequence = [c.split()[2] + (" " + c.split()[3] if c.split()[2] == "shell" else "") for c in log
                if c.startswith(f"-s {TABLET[0]}")]
    assert sequence == ["install", "install", "shell pm", "shell rm", "shell mkdir", "push", "shell am", "pull",
                        "shell rm"], log
    assert not any(c.startswith(f"-s {PIXEL[0]}") for c in log)
    assert device_files(tmp_path) == []  # the pushed bundle is gone


@pytest.mark.parametrize("devices,serial,fragment", [
    ((), None, "no Android device"),
    ((PIXEL, TABLET), None, f"2 devices are connected ({PIXEL[0]}, {TABLET[0]}): choose one with --serial"),
    ((PIXEL,), "nope", "--serial nope: no such device"),
    (((PIXEL[0], "unauthorized", "Pixel_8"),), None, "is unauthorized: accept the USB debugging prompt"),
])
def test_device_problems_exit_2_before_anything_is_pushed(tmp_path, devices, serial, fragment):
    env = adb_env(tmp_path, devices=devices)
    args = ["device", "run", "--platform", "android", "--bundle", GOLDEN, "--out", tmp_path / "r.json",
            "--db", tmp_path / "db.sqlite"] + (["--serial", serial] if serial else [])
    result = invoke(args, env)
    assert result.exit_code == 2, result.output + result.stderr
    assert fragment in one_error_line(result)
    assert [c for c in calls(tmp_path) if not c.startswith("devices")] == []
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "db.sqlite").exists()


def test_no_adb_exits_2_for_run_and_list(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {"PATH": str(empty), "ADB": None, "ANDROID_HOME": None, "ANDROID_SDK_ROOT": None}
    for args in (["device", "list"], ["device", "run", "--platform", "android", "--bundle", GOLDEN]):
        result = invoke(args, env)
        assert result.exit_code == 2, result.output
        assert "no adb: install Android's platform-tools" in one_error_line(result)
    result = invoke(["device", "list"], {**env, "ADB": str(empty)})
    assert result.exit_code == 2 and "is not an executable file" in one_error_line(result)


def _android_free_bundle(tmp_path: Path) -> Path:
    """The golden bundle with only its ONNX and Core ML artifacts (id recomputed: a valid bundle)."""
    folder = tmp_path / "no_android"
    shutil.copytree(GOLDEN, folder)
    doc = json.loads((folder / "bundle.json").read_text())
    doc["artifacts"] = [a for a in doc["artifacts"] if a["target"] in ("onnx", "coreml")]
    doc["id"] = bundle_id(doc)
    (folder / "bundle.json").write_text(json.dumps(doc))
    return folder


@pytest.mark.parametrize("case", ["missing", "invalid", "no_android"])
def test_a_missing_or_invalid_bundle_exits_2(tmp_path, case):
    env = adb_env(tmp_path)
    bundle, fragment = {
        "missing": (tmp_path / "nope", "nope"),
        "invalid": (Path(__file__).parent / "golden" / "bad" / "sha256_mismatch", "fails its sha256"),
        "no_android": (None, "nothing in this bundle runs on Android (it holds coreml, onnx"),
    }[case]
    bundle = bundle or _android_free_bundle(tmp_path)
    result = invoke(["device", "run", "--platform", "android", "--bundle", bundle, "--out", tmp_path / "r.json",
                     "--db", tmp_path / "db.sqlite"], env)
    assert result.exit_code == 2, result.output + result.stderr
    assert fragment in one_error_line(result)
    assert not any(c.split()[2:3] == ["push"] for c in calls(tmp_path) if c.startswith("-s"))
    assert not (tmp_path / "r.json").exists() and stored_runs(tmp_path / "db.sqlite") == 0


def test_the_app_not_installed_and_no_apk_exits_2(tmp_path):
    env = adb_env(tmp_path, installed=False)
    result = invoke(["device", "run", "--platform", "android", "--bundle", GOLDEN, "--out", tmp_path / "r.json"],
                    env)
    assert result.exit_code == 2
    assert "the harness app is not installed on emulator-5554: give its APKs with --apk" in one_error_line(result)
    result = invoke(["device", "run", "--platform", "android", "--bundle", GOLDEN, "--apk", tmp_path / "no.apk"],
                    env)
    assert result.exit_code == 2 and f"--apk {tmp_path / 'no.apk'}: no such file" in one_error_line(result)


@pytest.mark.parametrize("fail,fragment", [
    ("install", "installing app.apk on emulator-5554 failed: adb: failed to install app.apk: Failure "
                "[INSTALL_FAILED_UPDATE_INCOMPATIBLE"),
    ("push", "pushing the bundle to emulator-5554 failed: adb: error: failed to copy: No space left on device"),
    ("crash", "the instrumentation failed on the device: Process crashed."),
    ("refused", "the app could not run the bundle: bundle.json: tensors/x.f32 fails its sha256"),
    ("test-failure", "the instrumentation test failed on the device: java.lang.IllegalStateException: LiteRT: "
                     "failed to allocate tensors"),
    ("no-result", "the instrumentation ended without reporting a result (shvit_edge_result)"),
    ("pull-timeout", "pulling the result did not finish within 2 s"),
])
def test_a_failed_run_on_the_device_exits_1_and_cleans_up(tmp_path, fail, fragment):
    env = adb_env(tmp_path, installed=True, fail=fail)
    (tmp_path / "app.apk").write_bytes(b"PK")
    out, db = tmp_path / "r.json", tmp_path / "db.sqlite"
    args = ["device", "run", "--platform", "android", "--bundle", GOLDEN, "--out", out, "--db", db,
            "--timeout", "2"] + (["--apk", tmp_path / "app.apk"] if fail == "install" else [])
    started = time.monotonic()
    result = invoke(args, env)
    assert result.exit_code == 1, result.output + result.stderr
    assert fragment in one_error_line(result)
    assert time.monotonic() - started < 60
    assert not out.exists() and stored_runs(db) == 0
    assert device_files(tmp_path) == []  # nothing of the bundle left on the device
    if fail != "install":
        assert calls(tmp_path)[-1] == "-s emulator-5554 shell rm -rf /data/local/tmp/shvit-edge/" + \
            json.loads((GOLDEN / "bundle.json").read_text())["id"][:16]


def test_device_list_shows_every_device_and_its_state(tmp_path):
    env = adb_env(tmp_path, devices=(PIXEL, (TABLET[0], "unauthorized", TABLET[2])))
    result = invoke(["device", "list", "--json"], env)
    assert result.exit_code == 0, result.output
    devices = json.loads(result.stdout)["devices"]
    assert [(d["serial"], d["state"], d["model"]) for d in devices] == [PIXEL, (TABLET[0], "unauthorized", TABLET[2])]
    result = invoke(["device", "list"], env)
    assert result.exit_code == 0 and "emulator-5554" in result.stdout and "unauthorized" in result.stdout
    result = invoke(["device", "list"], adb_env(tmp_path / "none", devices=()))
    assert result.exit_code == 0 and "no devices" in result.stderr


@pytest.mark.parametrize("flag,value", [("--timeout", "0"), ("--timeout", "-1"), ("--run-timeout", "nan"),
                                        ("--platform", "ios")])
def test_bad_device_options_exit_2(tmp_path, flag, value):
    env = adb_env(tmp_path)
    args = ["device", "run", "--platform", "android", "--bundle", GOLDEN, flag, value]
    result = invoke(args, env)
    assert result.exit_code == 2, result.output
    assert calls(tmp_path) == []
