"""``shvit-edge device list|run``: a phone over adb, from bundle to a stored result (harness/device.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .bounds import SECONDS
from .cli_common import emit_json, json_option, stderr, stdout


@click.group()
def device():
    """Phones connected over adb: list them, run a validation bundle on one with the harness app."""


@device.command("list")
@json_option
def device_list(as_json):
    """The devices adb sees, with their state (only `device` is ready to run)."""
    from rich.table import Table
    from rich.text import Text

    from .harness.device import find_adb, list_devices

    devices = list_devices(find_adb())
    if as_json:
        emit_json({"devices": [d.as_json() for d in devices]})
        return
    if not devices:
        stderr().print(Text("no devices: adb lists none"), highlight=False)
        return
    table = Table(title="devices (adb)")
    for col in ("serial", "state", "model", "product"):
        table.add_column(col, overflow="fold")
    for d in devices:
        table.add_row(*(Text(v or "-") for v in (d.serial, d.state, d.model, d.product)))
    stdout().print(table)


@device.command("run")
@click.option("--platform", type=click.Choice(["android"]), required=True,
              help="The phone's platform (iOS runs from Xcode: ios_harness/README.md).")
@click.option("--bundle", "bundle_path", required=True, metavar="DIR",
              help="A bundle from `shvit-edge bundle` (a folder or its .zip).")
@click.option("--serial", default=None, metavar="S", help="The device (from `device list`); needed with several.")
@click.option("--apk", "apks", multiple=True, metavar="PATH",
              help="Install this APK first (repeat: the app, then its test APK).")
@click.option("--out", default=None, metavar="RESULT.json",
              help="Where to keep the pulled result document (default: result-<bundle id>-<serial>.json here).")
@click.option("--timeout", "step_timeout", default=600.0, show_default=True, type=SECONDS.click(),
              help="Seconds each install, push and pull may take.")
@click.option("--run-timeout", default=7200.0, show_default=True, type=SECONDS.click(),
              help="Seconds the run on the device may take.")
@click.option("--db", default=None, metavar="PATH", help="The results store (default as for `results`).")
@json_option
def device_run(platform, bundle_path, serial, apks, out, step_timeout, run_timeout, db, as_json):
    """Run a bundle on an Android phone with the harness app and store the result.

    Installs the --apk files, pushes the bundle, runs the app's instrumentation test (progress streamed),
    pulls the result document, removes the pushed bundle, then ingests bundle and result into the store,
    judged as `results ingest` judges. Exit 2 when something must be fixed first (no adb, no device, several
    devices and no --serial, the app not installed, a bad bundle); exit 1 when the run on the device failed
    or a run failed its parity."""
    from rich.text import Text

    from .atomic import sigterm_as_interrupt
    from .harness.bundle import open_bundle
    from .harness.device import DeviceRunOptions, find_adb, list_devices, pick_device, run_on_android
    from .harness.ingest import FAIL, ingest
    from .harness.store import open_store

    options = DeviceRunOptions(serial=serial, apks=tuple(apks), step_timeout=step_timeout, run_timeout=run_timeout)
    if out is None:
        with open_bundle(bundle_path) as opened:  # the default name needs the id (and the bundle checked first)
            bundle_id = opened.id
        chosen = pick_device(list_devices(find_adb()), serial)
        out = f"result-{bundle_id[:12]}-{chosen.serial.replace(':', '_').replace('/', '_')}.json"
    err = stderr()
    with sigterm_as_interrupt(), err.status("starting ...", spinner="dots") as status:
        def progress(message: str) -> None:
            status.update(Text(message))
            if not as_json:
                err.print(Text(message, style="dim"), highlight=False)
        doc = run_on_android(bundle_path, Path(out), options, progress=progress)
        status.update(Text("ingesting ..."))
        store = open_store(Path(db) if db else None)
        try:
            outcomes, _ = ingest([bundle_path, out], store)
        finally:
            store.close()
    parity = {}
    for o in outcomes:
        for k, n in o.parity.items():
            parity[k] = parity.get(k, 0) + n
    statuses = {}
    for run in doc["runs"]:
        statuses[run["status"]] = statuses.get(run["status"], 0) + 1
    summary = {"result": str(out), "db": str(store.path), "device": doc["device"], "runs": statuses,
               "parity": parity}
    if as_json:
        emit_json(summary)
    else:
        err.print(Text(f"{out}: {len(doc['runs'])} runs on {doc['device'].get('model')} ("
                       + ", ".join(f"{n} {k}" for k, n in sorted(statuses.items())) + "); parity "
                       + (", ".join(f"{n} {k}" for k, n in sorted(parity.items())) or "none")
                       + f"; stored in {store.path}"), highlight=False, soft_wrap=True)
    if parity.get(FAIL) or statuses.get("failed"):
        sys.exit(1)


COMMANDS = (device,)
