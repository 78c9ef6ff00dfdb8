"""Drive the Android harness app on a phone over ``adb``: install, push a bundle, run the app's instrumentation
test, pull the result document, clean up (``shvit-edge device run --platform android``, ``device list``).

The protocol with the app (android_harness/README.md): the bundle folder is pushed to
``/data/local/tmp/shvit-edge/<bundle id>``; ``am instrument -w -r -e bundle THAT`` runs it headless; the test
reports progress as ``INSTRUMENTATION_STATUS: shvit_edge_progress=TEXT`` and the result document's path on the
device as ``INSTRUMENTATION_STATUS: shvit_edge_result=PATH``, which is then pulled. The app measures; the host
judges (``results ingest``).

Exit codes follow the rest of the tool: a :class:`UsageError` / :class:`InputError` (2) where the user must fix
something (no adb, no device, two devices and no ``--serial``, an unauthorized device, the app not installed, a
missing or invalid bundle), a :class:`CheckFailed` (1) where the run on the device failed (install refused,
instrumentation crash or failure, no result, a pull that failed or timed out).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import CheckFailed, InputError, UsageError
from .documents import load_json, validate

APP_PACKAGE = "dev.shvitedge.harness"
TEST_PACKAGE = "dev.shvitedge.harness.test"
RUNNER = f"{TEST_PACKAGE}/androidx.test.runner.AndroidJUnitRunner"
REMOTE_ROOT = "/data/local/tmp/shvit-edge"
#: the targets the Android app runs (the others are recorded as skipped by the app)
ANDROID_TARGETS = ("tflite", "executorch")
STATUS_PROGRESS = "shvit_edge_progress"
STATUS_RESULT = "shvit_edge_result"
#: what the app reports when it refuses the bundle or cannot start the run
STATUS_ERROR = "shvit_edge_error"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Device:
    serial: str
    #: ``device`` (ready), ``unauthorized``, ``offline``, ``recovery`` ...
    state: str
    model: str | None = None
    product: str | None = None
    transport: str | None = None

    def as_json(self) -> dict:
        return {"serial": self.serial, "state": self.state, "model": self.model, "product": self.product,
                "transport_id": self.transport}


@dataclass(frozen=True)
class DeviceRunOptions:
    serial: str | None = None
    #: APKs to install first (the app and its test APK), in order
    apks: tuple[str, ...] = ()
    #: seconds each adb step (install, push, pull) may take
    step_timeout: float = 600.0
    #: seconds the instrumentation run may take
    run_timeout: float = 7200.0


def find_adb() -> str:
    """``$ADB``, else ``adb`` on PATH, else the SDK's platform-tools (``$ANDROID_HOME`` / ``$ANDROID_SDK_ROOT``)."""
    if os.environ.get("ADB"):
        adb = os.environ["ADB"]
        if not (os.path.isfile(adb) and os.access(adb, os.X_OK)):
            raise UsageError(f"$ADB is {adb!r}, which is not an executable file")
        return adb
    found = shutil.which("adb")
    if found:
        return found
    for var in ("ANDROID_HOME", "ANDROID_SDK_ROOT"):
        if os.environ.get(var):
            candidate = Path(os.environ[var]) / "platform-tools" / "adb"
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    raise UsageError("no adb: install Android's platform-tools (adb on PATH), or set $ADB or $ANDROID_HOME")


def _adb(adb: str, args: list[str], timeout: float, what: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([adb, *args], capture_output=True, text=True, timeout=timeout, errors="replace",
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"{what} did not finish within {timeout:g} s (adb {' '.join(args[:4])})") from None
    except OSError as exc:
        raise UsageError(f"cannot run {adb}: {exc.strerror or exc}") from None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def list_devices(adb: str, timeout: float = 30.0) -> list[Device]:
    """The devices ``adb devices -l`` lists (every state)."""
    done = _adb(adb, ["devices", "-l"], timeout, "adb devices")
    if done.returncode != 0:
        raise UsageError(f"adb devices failed: {_last_line(done.stderr or done.stdout)}")
    devices = []
    for line in done.stdout.splitlines():
        line = line.strip()
        if not line or line.startswith(("List of devices", "*")):
            continue
        parts = line.split()
        if len(parts) < 2:
            continue
        facts = dict(p.split(":", 1) for p in parts[2:] if ":" in p)
        devices.append(Device(parts[0], parts[1], facts.get("model"), facts.get("product"),
                              facts.get("transport_id")))
    return devices


def pick_device(devices: list[Device], serial: str | None) -> Device:
    if serial is not None:
        match = [d for d in devices if d.serial == serial]
        if not match:
            listed = ", ".join(d.serial for d in devices) or "none"
            raise UsageError(f"--serial {serial}: no such device (adb lists: {listed})")
        device = match[0]
    else:
        if not devices:
            raise UsageError("no Android device: adb lists none (connect one with USB debugging on, or start an "
                             "emulator)")
        if len(devices) > 1:
            raise UsageError(f"{len(devices)} devices are connected ({', '.join(d.serial for d in devices)}): "
                             "choose one with --serial")
        device = devices[0]
    if device.state != "device":
        hint = {"unauthorized": ": accept the USB debugging prompt on the phone",
                "offline": ": reconnect it"}.get(device.state, "")
        raise UsageError(f"device {device.serial} is {device.state}{hint}")
    return device


def _check_bundle(bundle) -> list[str]:
    runnable = [a.name for a in bundle.artifacts if a.entry["target"] in ANDROID_TARGETS]
    if not runnable:
        targets = ", ".join(sorted({a.entry["target"] for a in bundle.artifacts}))
        raise InputError(f"{bundle.root}: nothing in this bundle runs on Android (it holds {targets}; the app runs "
                         f"{' and '.join(ANDROID_TARGETS)})")
    return runnable


def run_on_android(bundle_path, result_out: Path, options: DeviceRunOptions,
                   progress: Progress | None = None) -> dict:
    """Run the bundle at ``bundle_path`` on a phone with the harness app; the result document, also written
    atomically at ``result_out``. Nothing is left on the device but the app's own copy of the result."""
    from ..atomic import atomic_outputs
    from .bundle import open_bundle

    progress = progress or (lambda message: None)
    for apk in options.apks:
        if not Path(apk).is_file():
            raise InputError(f"--apk {apk}: no such file")
    if not Path(result_out).parent.is_dir():
        raise UsageError(f"{Path(result_out).parent}: no such folder for --out")
    adb = find_adb()
    device = pick_device(list_devices(adb), options.serial)
    with open_bundle(bundle_path) as bundle:
        _check_bundle(bundle)
        serial = ["-s", device.serial]
        for apk in options.apks:
            progress(f"installing {Path(apk).name} on {device.serial} ...")
            done = _adb(adb, [*serial, "install", "-r", "-t", str(apk)], options.step_timeout, f"installing {apk}")
            if done.returncode != 0 or "Failure" in done.stdout:
                raise CheckFailed(f"installing {Path(apk).name} on {device.serial} failed: "
                                  f"{_last_line(done.stdout + done.stderr)}")
        listed = _adb(adb, [*serial, "shell", "pm", "list", "instrumentation"], options.step_timeout,
                      "listing the instrumentations")
        if RUNNER not in listed.stdout:
            raise UsageError(f"the harness app is not installed on {device.serial}: give its APKs with --apk "
                             f"(app and test APK; android_harness/README.md)")
        remote = f"{REMOTE_ROOT}/{bundle.id[:16]}"
        try:
            _adb(adb, [*serial, "shell", "rm", "-rf", remote], options.step_timeout, "clearing the device folder")
            _adb(adb, [*serial, "shell", "mkdir", "-p", REMOTE_ROOT], options.step_timeout, "making the folder")
            progress(f"pushing the bundle to {device.serial}:{remote} ...")
            done = _adb(adb, [*serial, "push", str(bundle.root), remote], options.step_timeout, "pushing the bundle")
            if done.returncode != 0:
                raise CheckFailed(f"pushing the bundle to {device.serial} failed: "
                                  f"{_last_line(done.stderr or done.stdout)}")
            device_result = _instrument(adb, serial, remote, options.run_timeout, progress)
            progress(f"pulling {device_result} ...")
            with tempfile.TemporaryDirectory(prefix="shvit-edge-pull-") as tmp:
                local = Path(tmp) / "result.json"
                done = _adb(adb, [*serial, "pull", device_result, str(local)], options.step_timeout,
                            "pulling the result")
                if done.returncode != 0 or not local.is_file():
                    raise CheckFailed(f"pulling {device_result} from {device.serial} failed: "
                                      f"{_last_line(done.stderr or done.stdout)}")
                data = local.read_bytes()
        finally:  # a cleanup that fails must not hide why the run ended
            try:
                _adb(adb, [*serial, "shell", "rm", "-rf", remote], options.step_timeout, "removing the pushed bundle")
            except CheckFailed as exc:
                progress(f"could not remove {remote} from {device.serial}: {exc}")
    try:  # an app that writes what the schema refuses failed its run
        doc = load_json(data, f"the result pulled from {device.serial}")
        validate(doc, "result", f"the result pulled from {device.serial}")
    except InputError as exc:
        raise CheckFailed(str(exc)) from None
    with atomic_outputs(Path(result_out), overwrite=True) as (tmp,):
        tmp.write_bytes(data)
    return doc


_STATUS = re.compile(r"INSTRUMENTATION_STATUS: (\w+)=(.*)")


def _instrument(adb: str, serial: list[str], remote: str, timeout: float, progress: Progress) -> str:
    """Run the instrumentation; the result's path on the device. Streams the app's progress."""
    args = [adb, *serial, "shell", "am", "instrument", "-w", "-r", "-e", "bundle", remote, RUNNER]
    progress("running the bundle on the device ...")
    try:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                                stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise UsageError(f"cannot run {adb}: {exc.strerror or exc}") from None
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    started = time.monotonic()
    lines, result, code, app_error = [], None, None, None
    try:
        for line in proc.stdout:
            line = line.rstrip("\r\n")
            lines.append(line)
            match = _STATUS.match(line)
            if match and match.group(1) == STATUS_PROGRESS:
                progress(match.group(2))
            elif match and match.group(1) == STATUS_RESULT:
                result = match.group(2).strip()
            elif match and match.group(1) == STATUS_ERROR:
                app_error = match.group(2).strip()
            elif line.startswith("INSTRUMENTATION_CODE:"):
                code = line.split(":", 1)[1].strip()
        proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = "\n".join(lines)
    if time.monotonic() - started >= timeout:
        raise CheckFailed(f"the instrumentation did not finish within {timeout:g} s")
    if app_error is not None:
        raise CheckFailed(f"the app could not run the bundle: {app_error}")
    crash = re.search(r"shortMsg=(.*)", text)
    if crash or "INSTRUMENTATION_FAILED" in text:
        why = crash.group(1).strip() if crash else _last_line(text)
        raise CheckFailed(f"the instrumentation failed on the device: {why}")
    if "FAILURES!!!" in text or code not in ("-1", None) or proc.returncode != 0:
        raise CheckFailed(f"the instrumentation test failed on the device: {_failure(lines)}")
    if result is None:
        raise CheckFailed(f"the instrumentation ended without reporting a result ({STATUS_RESULT}): "
                          f"{_last_line(text)}")
    return result


def _failure(lines: list[str]) -> str:
    """The first line of the failing test's stack, else the last line."""
    for line in lines:
        if line.startswith("INSTRUMENTATION_STATUS: stack="):
            return line.split("=", 1)[1].strip()
    return _last_line("\n".join(lines))
