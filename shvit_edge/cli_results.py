"""The on-device validation commands: ``bundle``, ``harness run`` and ``results ingest|listen|list|show|report``.

The loop they make: ``shvit-edge bundle`` packs artifacts with inputs, references, tolerances and run settings;
a harness (``harness run`` here, the iOS and Android apps on a phone) runs the bundle and writes a result
document; ``results ingest`` (or ``results listen``, which the apps post to) judges and stores it; ``results
report`` shows host and device side by side. Exit codes as everywhere: 2 for usage and input errors (nothing
stored, nothing half-written), 1 for a failed check (a run that failed, a parity failure).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .bounds import ITERATIONS, SAMPLES, SEED, THREADS, WARMUP
from .cli_common import emit_json, fmt, json_option, stderr, stdout


def _db_option(func):
    return click.option("--db", default=None, metavar="PATH",
                        help="The results store (SQLite; default: the user's data directory, or "
                             "$SHVIT_EDGE_RESULTS_DB).")(func)


def _print_line(text: str) -> None:
    from rich.text import Text

    stderr().print(Text(text), highlight=False, soft_wrap=True)


@click.command()
@click.argument("paths", nargs=-1, required=True, metavar="ARTIFACT...")
@click.option("--out", "out", required=True, metavar="DIR", help="The bundle folder to write (must not exist).")
@click.option("--images", default=None, metavar="DIR",
              help="A folder of JPEG/PNG images, preprocessed as each manifest says (as verify does).")
@click.option("--samples", default=8, show_default=True, type=SAMPLES.click(),
              help="Seeded random inputs after the images.")
@click.option("--seed", default=0, show_default=True, type=SEED.click(), help="Seed of the random inputs.")
@click.option("--checkpoint", default=None, metavar="FILE",
              help="Reference checkpoint (default: the one each manifest names, read weights-only).")
@click.option("--trust-checkpoint", is_flag=True,
              help="Allow arbitrary pickled objects in the --checkpoint FILE (runs code from it).")
@click.option("--warmup", type=WARMUP.click(), default=None, help="Warm-up runs (default: the profile's).")
@click.option("--iterations", type=ITERATIONS.click(), default=None,
              help="Timed runs per setting (default: the profile's).")
@click.option("--threads", type=THREADS.click(), default=None, help="CPU threads (default: the profile's).")
@click.option("--zip", "as_zip", is_flag=True, help="Write one .zip archive (for AirDrop or adb push) instead.")
@json_option
def bundle(paths, out, images, samples, seed, checkpoint, trust_checkpoint, warmup, iterations, threads, as_zip,
           as_json):
    """Pack artifacts into a validation bundle for a device harness.

    ARTIFACT is an artifact or a folder of them. The bundle holds the artifacts and manifests, the input
    tensors and PyTorch reference outputs as raw little-endian files, each artifact's tolerances and run
    settings, an ExecuTorch BundledProgram (.bpte) per .pte, and bundle.json listing every file with its sha256
    (docs/bundle.md)."""
    from rich.text import Text

    from .atomic import sigterm_as_interrupt
    from .harness.bundle import BundleOptions, check_options, open_bundle, write_bundle

    options = BundleOptions(images=images, samples=samples, seed=seed, checkpoint=checkpoint,
                            trust_checkpoint=trust_checkpoint, warmup=warmup, iterations=iterations,
                            threads=threads, zip=as_zip)
    check_options(options)
    err = stderr()
    with sigterm_as_interrupt(), err.status("bundling ...", spinner="dots") as status:
        written = write_bundle(paths, Path(out), options, progress=lambda message: status.update(Text(message)))
    with open_bundle(written) as opened:  # read back as a harness will
        summary = {"bundle": str(written), "id": opened.id,
                   "artifacts": [{"name": a.name, "target": a.entry["target"], "settings": a.entry["run"]["settings"],
                                  "bundled_program": a.entry.get("bundled_program")} for a in opened.artifacts],
                   "inputs": opened.doc["inputs"], "files": len(opened.doc["files"]),
                   "bytes": sum(f["size"] for f in opened.doc["files"])}
    if as_json:
        emit_json(summary)
    else:
        _print_line(f"wrote {written}: {len(summary['artifacts'])} artifacts, {summary['files']} files, "
                    f"{summary['bytes'] / 1e6:.1f} MB; id {summary['id'][:12]}")


@click.group()
def harness():
    """Run a validation bundle on this machine, as a device app does."""


@harness.command("run")
@click.argument("bundle_path", metavar="BUNDLE")
@click.option("--out", default=None, metavar="RESULT.json", help="Write the result document here.")
@click.option("--warmup", type=WARMUP.click(), default=None, help="Warm-up runs (default: the bundle's).")
@click.option("--iterations", type=ITERATIONS.click(), default=None, help="Timed runs (default: the bundle's).")
@click.option("--threads", type=THREADS.click(), default=None, help="CPU threads (default: the bundle's).")
@click.option("--artifact", "only", multiple=True, metavar="NAME",
              help="Only this artifact of the bundle (repeatable).")
@json_option
def harness_run(bundle_path, out, warmup, iterations, threads, only, as_json):
    """Run BUNDLE (a folder or its .zip) on this machine's runtimes and write a result document.

    The reference implementation of the protocol the device apps follow: every sha256 checked, then per
    artifact and runtime setting, in a process of its own: load, first inference, warm-up, timed iterations
    (every latency kept) and the raw outputs. Core ML runs in the coreml-sim interpreter off macOS. It measures
    and does not judge: `results ingest` judges. Exit 1 when every run failed."""
    from rich.text import Text

    from .atomic import sigterm_as_interrupt
    from .errors import CheckFailed
    from .harness.host import HarnessOptions, run_bundle

    options = HarnessOptions(warmup=warmup, iterations=iterations, threads=threads, only=tuple(only))
    err = stderr()
    failed = None
    with sigterm_as_interrupt(), err.status("running ...", spinner="dots") as status:
        try:
            doc = run_bundle(bundle_path, Path(out) if out else None, options,
                             progress=lambda message: status.update(Text(message)))
        except CheckFailed as exc:
            failed = exc
            doc = None
    if failed is not None:
        raise failed
    if as_json:
        emit_json(doc if out is None else {"result": out, "runs": len(doc["runs"])})
    else:
        _print_runs(doc)
        if out:
            _print_line(f"wrote {out}")


def _print_runs(doc: dict) -> None:
    from rich.table import Table
    from rich.text import Text

    from .harness.records import latency_stats

    table = Table(title=Text(f"harness run on {doc['device']['model']} ({doc['device'].get('soc', '')})"))
    for col in ("artifact", "runtime", "setting", "status", "load ms", "first ms", "p50 ms", "p90 ms", "CV",
                "peak MB", "error"):
        table.add_column(col, overflow="fold")
    for run in doc["runs"]:
        stats = latency_stats(run.get("latencies_ms", ()))
        cells = (run["artifact"], run["runtime"], run["setting"], run["status"], fmt(run.get("load_ms"), ".0f"),
                 fmt(run.get("first_inference_ms"), ".1f"), fmt(stats.get("p50"), ".2f"), fmt(stats.get("p90"), ".2f"),
                 fmt(stats.get("cv"), ".3f"), fmt(run.get("peak_memory_mb"), ".0f"), run.get("error") or "")
        table.add_row(*(Text(str(c)) for c in cells))
    stdout().print(table)


@click.group()
def results():
    """The results store: ingest results of any harness or benchmark tool, judge them, report them."""


@results.command("ingest")
@click.argument("paths", nargs=-1, required=True, metavar="FILE|DIR...")
@_db_option
@json_option
def results_ingest(paths, db, as_json):
    """Validate, judge and store results: bundles, shvit-edge result and bench documents, and the outputs of
    ExecuTorch's benchmark apps, XCTest/xcresulttool, LiteRT's benchmark_model, coremltools' benchmarker and
    Qualcomm AI Hub profiles, each recognised by its content.

    Everything is checked first and stored in one transaction: anything refused (exit 2) stores nothing. A run
    of a bundle in the store is judged against its references with verify's metrics and tolerances. Exit 1
    when a stored run failed its parity or failed to run."""
    from rich.text import Text

    from .harness.ingest import FAIL, ingest
    from .harness.store import open_store

    store = open_store(Path(db) if db else None)
    try:
        err = stderr()
        with err.status("ingesting ...", spinner="dots") as status:
            outcomes, passed_over = ingest(paths, store, progress=lambda message: status.update(Text(message)))
    finally:
        store.close()
    if as_json:
        emit_json({"db": str(store.path), "ingested": [o.as_json() for o in outcomes], "passed_over": passed_over})
    else:
        for o in outcomes:
            if o.already:
                _print_line(f"{o.origin}: already stored ({o.source_tool})")
                continue
            parity = ", ".join(f"{n} {k}" for k, n in sorted(o.parity.items()))
            if o.kind == "bundle":
                _print_line(f"{o.origin}: bundle stored" + (f"; runs judged against it: {parity}" if parity else ""))
                continue
            _print_line(f"{o.origin}: {o.source_tool}: {o.stored} runs stored"
                        + (f"; parity {parity}" if parity else "")
                        + (f"; {o.untied} untied (no artifact sha256: the tool does not say which file it ran)"
                           if o.untied else "")
                        + (f"; {o.failed} failed" if o.failed else ""))
        for path in passed_over:
            _print_line(f"{path}: passed over (not a result file by its name)")
        _print_line(f"store: {store.path}")
    if any(o.parity.get(FAIL) or o.failed for o in outcomes):
        sys.exit(1)


@results.command("listen")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on: loopback unless you ask for the LAN (e.g. 0.0.0.0).")
@click.option("--port", default=None, type=click.IntRange(0, 65535), help="Port (default 8765; 0: any free port).")
@click.option("--token", default=None, metavar="TOKEN",
              help="The pairing token (default: a new random one, printed at start).")
@_db_option
def results_listen(host, port, token, db):
    """Receive result documents posted by the harness apps (POST /results, with the pairing token), judge and
    store them. Prints the token and a QR code the iOS app scans. Ctrl-C stops."""
    from .harness.ingest import accept_into
    from .harness.listen import DEFAULT_PORT, ListenOptions, is_loopback, pairing_qr, serve_forever
    from .harness.store import open_store

    store = open_store(Path(db) if db else None)  # created (and migrated) before the first request
    store.close()
    options = ListenOptions(host=host, port=DEFAULT_PORT if port is None else port, token=token or "")

    def ready(pairing: dict) -> None:
        _print_line(f"listening on {pairing['url']} (store {store.path})")
        if not is_loopback(host):
            _print_line("reachable from the LAN: anyone with the token can post results")
        _print_line(f"pairing token: {pairing['token']}")
        click.echo(pairing_qr(pairing), err=True)

    serve_forever(options, accept_into(store.path), _print_line, ready)


_FILTERS = (click.option("--variant", default=None), click.option("--target", default=None),
            click.option("--device", default=None, help="Part of the device model, chip or OS."),
            click.option("--runtime", default=None, help="Part of the runtime or setting."))


def _filters(func):
    for option in reversed(_FILTERS):
        func = option(func)
    return func


@results.command("list")
@_filters
@_db_option
@json_option
def results_list(variant, target, device, runtime, db, as_json):
    """One line per stored run (filters: --variant, --target, --device, --runtime)."""
    from rich.table import Table
    from rich.text import Text

    from .harness.report import summary_rows
    from .harness.store import open_store

    store = open_store(Path(db) if db else None, create=False)
    try:
        rows = summary_rows(store.runs(variant=variant, target=target, device=device, runtime=runtime))
    finally:
        store.close()
    if as_json:
        emit_json({"runs": rows})
        return
    if not rows:
        _print_line("no runs match")
        return
    table = Table(title="results")
    for col in rows[0]:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(Text(fmt(v, ".3g") if isinstance(v, float) else "-" if v is None else str(v))
                        for v in row.values()))
    stdout().print(table)


@results.command("show")
@click.argument("run_id", type=int)
@_db_option
def results_show(run_id, db):
    """Everything stored of one run, as JSON (its raw latencies included)."""
    from .errors import InputError
    from .harness.store import open_store

    store = open_store(Path(db) if db else None, create=False)
    try:
        rows = store.runs(id=run_id)
    finally:
        store.close()
    if not rows:
        raise InputError(f"no run {run_id} in {store.path}")
    emit_json(rows[0])


@results.command("report")
@click.option("--out", "out_dir", required=True, metavar="DIR", help="Write results.md and results.html here.")
@_filters
@_db_option
def results_report(out_dir, variant, target, device, runtime, db):
    """Host and device results side by side: the table, latency per device and compute unit, and parity per
    device against tolerance."""
    from .bench.report import check_report_dir, require_matplotlib
    from .harness.report import write_results_report
    from .harness.store import open_store

    require_matplotlib()
    check_report_dir(out_dir)
    store = open_store(Path(db) if db else None, create=False)
    try:
        rows = store.runs(variant=variant, target=target, device=device, runtime=runtime)
    finally:
        store.close()
    written = write_results_report(rows, out_dir)
    _print_line(f"wrote {', '.join(str(p) for p in written)} ({len(rows)} runs)")


COMMANDS = (bundle, harness, results)
