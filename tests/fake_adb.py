"""A stand-in for ``adb`` and the phone behind it, for the ``shvit-edge device`` tests.

It maps the device's file system onto ``$FAKE_ADB_STATE/fs`` and plays the harness app's instrumentation test by
running the host harness (``shvit-edge harness run``) on the pushed bundle, restricted to the targets the
Android app runs (ExecuTorch and LiteRT). What it answers is what adb and ``am instrument -r`` print. It is a
double for the phone: it shows the orchestration and its error paths, not a phone's numbers.

``$FAKE_ADB_STATE/config.json``: ``devices`` ([serial, state, model] each), ``installed`` (whether the app's
instrumentation is listed before any install), ``fail`` (null, or one of ``install``, ``push``, ``crash``,
``refused``, ``test-failure``, ``no-result``, ``pull-timeout``). Every call is appended to ``calls.log``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

RUNNER = "dev.shvitedge.harness.test/androidx.test.runner.AndroidJUnitRunner"
RESULTS = "/sdcard/Android/data/dev.shvitedge.harness/files/results"
ANDROID_TARGETS = ("tflite", "executorch")


def state() -> Path:
    return Path(os.environ["FAKE_ADB_STATE"])


def config() -> dict:
    return json.loads((state() / "config.json").read_text())


def save(cfg: dict) -> None:
    (state() / "config.json").write_text(json.dumps(cfg))


def local(remote: str) -> Path:
    return state() / "fs" / remote.lstrip("/")


def out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def instrument(args: list[str], cfg: dict) -> int:
    bundle = args[args.index("bundle") + 1]
    out("INSTRUMENTATION_STATUS: class=dev.shvitedge.harness.BundleRunTest")
    out(f"INSTRUMENTATION_STATUS: shvit_edge_progress=checking {bundle}")
    if cfg["fail"] == "crash":
        out("INSTRUMENTATION_RESULT: shortMsg=Process crashed.")
        out("INSTRUMENTATION_CODE: 0")
        return 0
    if cfg["fail"] == "refused":
        out("INSTRUMENTATION_STATUS: shvit_edge_error=bundle.json: tensors/x.f32 fails its sha256")
        out("INSTRUMENTATION_STATUS_CODE: 2")
        out("INSTRUMENTATION_RESULT: stream=\nFAILURES!!!")
        out("INSTRUMENTATION_CODE: -1")
        return 0
    if cfg["fail"] == "test-failure":
        out("INSTRUMENTATION_STATUS: stack=java.lang.IllegalStateException: LiteRT: failed to allocate tensors")
        out("INSTRUMENTATION_STATUS_CODE: -2")
        out("INSTRUMENTATION_RESULT: stream=\nFAILURES!!!\nTests run: 1,  Failures: 1")
        out("INSTRUMENTATION_CODE: -1")
        return 0
    if cfg["fail"] in ("no-result", "pull-timeout"):  # what is pulled never arrives: no need to run
        if cfg["fail"] == "pull-timeout":
            out(f"INSTRUMENTATION_STATUS: shvit_edge_result={RESULTS}/pending.json")
        out("INSTRUMENTATION_STATUS_CODE: 0")
        out("INSTRUMENTATION_RESULT: stream=\nOK (1 test)")
        out("INSTRUMENTATION_CODE: -1")
        return 0
    doc = json.loads((local(bundle) / "bundle.json").read_text())
    names = [a["name"] for a in doc["artifacts"] if a["target"] in ANDROID_TARGETS]
    remote_result = f"{RESULTS}/{doc['id'][:16]}.json"
    local(RESULTS).mkdir(parents=True, exist_ok=True)
    command = [str(Path(sys.executable).parent / "shvit-edge"), "harness", "run", str(local(bundle)), "--out",
               str(local(remote_result)), "--warmup", "0", "--iterations", "2"]
    for name in names:
        command += ["--artifact", name]
        out(f"INSTRUMENTATION_STATUS: shvit_edge_progress=running {name}")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        out(f"INSTRUMENTATION_STATUS: stack={done.stderr.strip().splitlines()[-1]}")
        out("INSTRUMENTATION_STATUS_CODE: -2")
        out("INSTRUMENTATION_RESULT: stream=\nFAILURES!!!")
        out("INSTRUMENTATION_CODE: -1")
        return 0
    out(f"INSTRUMENTATION_STATUS: shvit_edge_result={remote_result}")
    out("INSTRUMENTATION_STATUS_CODE: 0")
    out("INSTRUMENTATION_RESULT: stream=\nTime: 1.0\n\nOK (1 test)")
    out("INSTRUMENTATION_CODE: -1")
    return 0


def main(argv: list[str]) -> int:
    cfg = config()
    with open(state() / "calls.log", "a") as log:
        log.write(" ".join(argv) + "\n")
    ready = [d for d in cfg["devices"] if d[1] == "device"]
    if argv[:1] == ["devices"]:
        out("List of devices attached")
        for serial, status, model in cfg["devices"]:
            out(f"{serial}\t{status} product:{model.lower()} model:{model} device:{model.lower()} transport_id:1")
        out("")
        return 0
    if argv[:1] == ["-s"]:
        serial, argv = argv[1], argv[2:]
        if serial not in [d[0] for d in ready]:
            print(f"adb: device '{serial}' not found", file=sys.stderr)
            return 1
    elif len(ready) != 1:
        print("adb: more than one device/emulator" if ready else "adb: no devices/emulators found", file=sys.stderr)
        return 1
    command = argv[0]
    if command == "install":
        if cfg["fail"] == "install":
            out("Performing Streamed Install")
            out("adb: failed to install app.apk: Failure [INSTALL_FAILED_UPDATE_INCOMPATIBLE: signatures differ]")
            return 1
        cfg["installed"] = True
        save(cfg)
        out("Performing Streamed Install")
        out("Success")
        return 0
    if command == "push":
        if cfg["fail"] == "push":
            print("adb: error: failed to copy: No space left on device", file=sys.stderr)
            return 1
        source, target = Path(argv[-2]), local(argv[-1])
        shutil.copytree(source, target) if source.is_dir() else shutil.copy(source, target)
        out(f"{argv[-2]}: 1 file pushed")
        return 0
    if command == "pull":
        if cfg["fail"] == "pull-timeout":
            time.sleep(3600)
        source = local(argv[-2])
        if not source.exists():
            print(f"adb: error: failed to stat remote object '{argv[-2]}': No such file or directory", file=sys.stderr)
            return 1
        shutil.copy(source, argv[-1])
        out(f"{argv[-2]}: 1 file pulled")
        return 0
    if command == "shell":
        rest = argv[1:]
        if rest[:3] == ["pm", "list", "instrumentation"]:
            if cfg["installed"]:
                out(f"instrumentation:{RUNNER} (target=dev.shvitedge.harness)")
            return 0
        if rest[:2] == ["rm", "-rf"]:
            shutil.rmtree(local(rest[2]), ignore_errors=True)
            return 0
        if rest[:2] == ["mkdir", "-p"]:
            local(rest[2]).mkdir(parents=True, exist_ok=True)
            return 0
        if rest[:2] == ["am", "instrument"]:
            return instrument(rest, cfg)
    print(f"fake adb: unsupported: {' '.join(argv)}", file=sys.stderr)
    return 1


def install(folder: Path, devices, installed: bool = True, fail: str | None = None) -> Path:
    """Make ``folder/bin/adb`` (this double) with its state in ``folder``; returns the bin folder for PATH."""
    (folder / "fs").mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"devices": [list(d) for d in devices], "installed": installed,
                                                    "fail": fail}))
    bin_dir = folder / "bin"
    bin_dir.mkdir(exist_ok=True)
    adb = bin_dir / "adb"
    adb.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
                   "from fake_adb import main\nsys.exit(main(sys.argv[1:]))\n")
    adb.chmod(0o755)
    return bin_dir


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
