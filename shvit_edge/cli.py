"""The ``shvit-edge`` command line: parse, call the library, render.

Exit codes: 0 success, 1 a check failed, 2 a usage or input error (see :mod:`shvit_edge.errors`).
``--json`` prints one JSON document on stdout; logs and progress go to stderr. Heavy libraries are
imported inside the commands, so ``shvit-edge --help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import __version__
from .bench import DEFAULT_ITERATIONS as BENCH_ITERATIONS
from .bounds import (BATCH, CALIBRATION_SAMPLES, COSINE, FRACTION, ITERATIONS, JOBS, LAYER_COUNT, MAX_ABS, ROUNDS,
                     SAMPLES, SECONDS, SEED, SQNR_DB, THREADS, WARMUP)
from .cli_device import COMMANDS as DEVICE_COMMANDS
from .cli_results import COMMANDS as RESULTS_COMMANDS
from .cli_common import emit_json as _emit_json, fmt as _fmt, json_option, stderr as _stderr, stdout as _stdout
from .errors import ShvitEdgeError, UsageError


class _ToolError(click.ClickException):
    """A library error shown as ``Error: <message>`` with the error's own exit code."""

    def __init__(self, error: ShvitEdgeError):
        super().__init__(str(error))
        self.exit_code = error.exit_code


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ShvitEdgeError as exc:
            raise _ToolError(exc) from None


def backend_options(func):
    """Each registered backend's own export options (its ``Options`` fields), in registry order."""
    import dataclasses

    from .backends.base import backends, option_fields

    decorators = []
    for backend in backends().values():
        for f in option_fields(backend.Options):
            cli = f.metadata["cli"]
            if f.type in (bool, "bool"):
                kind = {"is_flag": True}
            else:
                kind = {"type": click.Choice(list(cli["choices"])) if cli["choices"] else str,
                        "show_default": f.default is not None, "metavar": cli["metavar"]}
            default = f.default if f.default is not dataclasses.MISSING else None
            decorators.append(click.option(cli["flag"], f.name, default=default, help=cli["help"], **kind))
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def _quantize_help() -> str:
    """``--quantize``'s help: each backend's modes, from the registry."""
    from .backends.base import backends

    parts = []
    for backend in backends().values():
        modes = []
        for m in backend.quantization_modes:
            notes = (["calibrated"] if m.calibrated else []) + \
                ([f"needs {m.min_deployment_target}"] if m.min_deployment_target else [])
            modes.append(m.name + (f" ({', '.join(notes)})" if notes else ""))
        if modes:
            parts.append(f"{backend.title}: {', '.join(modes)}")
    return "; ".join(parts)


def _methods_help() -> str:
    from .backends.base import backends

    return "; ".join(f"{b.title} {', '.join(b.calibration_methods)}" for b in backends().values()
                     if b.calibration_methods)


def checkpoint_options(func):
    """The options every command that reads a checkpoint shares."""
    func = click.option("--trust-checkpoint", is_flag=True,
                        help="Allow arbitrary pickled objects in the checkpoint. This runs code from the "
                             "file: only for files you trust.")(func)
    func = click.option("--ema", "use_ema", is_flag=True,
                        help="Use the EMA weights (model_ema) of a training checkpoint.")(func)
    func = click.option("--variant", default=None, metavar="NAME",
                        help="The variant you expect (`shvit-edge variants` lists them: shvit_s1, efficientvit_m0, "
                             "...); detected from the checkpoint if omitted, an error if it disagrees.")(func)
    return func


def _plain(value) -> str:
    """``value`` as text for a rich string that has markup: data (paths, names, messages) never is markup (a
    path holding ``[/x]`` would crash rich, and ``models[v1.0]`` would lose its brackets)."""
    from rich.markup import escape

    return escape(str(value))


def _cell(value):
    """A table cell holding data, shown verbatim."""
    from rich.text import Text

    return Text(str(value))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="shvit-edge")
def cli():
    """Turn trained SHViT checkpoints into verified, benchmarked on-device artifacts."""


@cli.command()
@json_option
def variants(as_json: bool):
    """List every model family's variants: default resolution, fused parameters and MACs (measured on the
    model), and each family's own facts (SHViT: widths, depths, partial dims)."""
    from .models.registry import families, variant_stats

    rows, tables = [], []
    with _stderr().status("measuring parameters and MACs of each variant ...", spinner="dots"):
        for family in families():
            first = len(rows)
            for name in family.variants():
                stats = variant_stats(name)
                rows.append({"family": family.name, "variant": name, "resolution": family.default_resolution(name),
                             "params": stats["params"], "macs": stats["macs"], **family.describe(name)})
            tables.append((family, rows[first:]))
    if as_json:
        _emit_json({"variants": rows})
        return
    from rich.table import Table

    # one table per family, with that family's own columns: a shared one is too wide for a terminal
    for family, family_rows in tables:
        table = Table(title=f"{family.title or family.name} variants (fused, 1000 classes, MACs at the default "
                            "resolution)")
        table.add_column("variant", no_wrap=True)
        for col, justify in (("resolution", "right"), ("params", "right"), ("MACs", "right"),
                             *((c, "left") for c in family.table_columns)):
            table.add_column(col, justify=justify)
        for r in family_rows:
            table.add_row(r["variant"], str(r["resolution"]), f"{r['params'] / 1e6:.2f}M", f"{r['macs'] / 1e6:.0f}M",
                          *(str(r.get(c, "")) for c in family.table_columns))
        _stdout().print(table)


@cli.command()
@click.argument("checkpoint", metavar="CHECKPOINT")
@checkpoint_options
@json_option
def inspect(checkpoint: str, variant: str | None, use_ema: bool, trust_checkpoint: bool, as_json: bool):
    """Say what a checkpoint holds: layout, variant, classes, distillation head, EMA, dtype."""
    from .models.checkpoint import load_checkpoint
    from .models.registry import count_params

    loaded = load_checkpoint(checkpoint, variant=variant, use_ema=use_ema, trust_checkpoint=trust_checkpoint)
    info = loaded.describe()
    info["params"] = count_params(loaded.model)
    if as_json:
        _emit_json(info)
        return
    from rich.table import Table

    table = Table(title=f"checkpoint {_plain(checkpoint)}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in info.items():
        table.add_row(_cell(key), _cell(value))
    _stdout().print(table)


@cli.command()
@click.option("--target", "target", required=True, metavar="TARGET",
              help="coreml, executorch, tflite, onnx or all; a profile name from targets/; or a profile .toml "
                   "(several comma-separated).")
@click.option("--checkpoint", default=None, metavar="FILE", help="The trained checkpoint to export.")
@checkpoint_options
@click.option("--resolution", default=None, metavar="N|HxW",
              help="Input size (default: the variant's, as `shvit-edge variants` lists it: 224, SHViT-S4 256). "
                   "Multiples of 16, at least 64, and whatever more the model family requires.")
@click.option("--batch", default=1, show_default=True, type=BATCH.click(), help="Batch size baked into the artifact.")
@click.option("--out", "out_dir", default="out", show_default=True, metavar="DIR", help="Output folder.")
@click.option("--force", is_flag=True, help="Overwrite existing artifacts.")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default=None,
              help="Compute precision (default: the target profile's; Core ML fp16, others fp32). With several "
                   "targets it applies to those whose profile offers it.")
@backend_options
@click.option("--labels", "labels_file", default=None, metavar="FILE",
              help="Class labels, one per line (default: ImageNet-1k names for 1000 classes, else indices).")
@click.option("--seed", default=0, show_default=True, type=SEED.click(),
              help="Seed of the untrained weights when no checkpoint is given.")
@click.option("--quantize", default=None, metavar="MODE",
              help="Quantize with the backend's own tooling. " + _quantize_help()
                   + ". verify then judges it by the profile's tolerance class for the mode.")
@click.option("--calibration", default=None, metavar="DIR|random",
              help="Calibration images for a calibrated mode (the first --calibration-samples by name), or "
                   "random inputs (only for trying things out: warns).")
@click.option("--calibration-samples", default=32, show_default=True, type=CALIBRATION_SAMPLES.click(),
              help="How many calibration inputs.")
@click.option("--keep-float", "keep_float", multiple=True, metavar="LAYER",
              help="Leave this deploy-model layer in float when quantizing (repeat it; names as "
                   "`shvit-edge quantize-report` prints them).")
@click.option("--calibration-augment/--no-calibration-augment", default=False, show_default=True,
              help="Fill the calibration up to --calibration-samples with seeded random crops and flips of the "
                   "folder's images (ExecuTorch, TFLite, ONNX; measured to lower int8 SQNR, see README).")
@click.option("--calibration-method", default=None, metavar="METHOD",
              help="--quantize int8 range estimation, per backend (default first): " + _methods_help() + ".")
@click.option("--dfq", default="default", show_default=True,
              type=click.Choice(["default", "none", "cle", "bias-correction", "cle+bias-correction"]),
              help="Data-free transforms before --quantize int8 (Nagel et al. 2019): cross-layer equalization, "
                   "bias correction; default: none on every backend (none gained more than 0.2 dB: README).")
@click.option("--images", "verify_images", default=None, metavar="DIR",
              help="With --quantize: the images the artifact is verified on against the fp32 model after export "
                   "(default: the --calibration folder; without one, 8 seeded random inputs).")
@click.option("--no-verify", is_flag=True, help="With --quantize: skip the verification after export.")
@click.option("--jobs", "-j", default="auto", show_default=True, metavar="N|auto",
              help="Targets exported at once, each in its own process (auto: one per CPU, at most one per "
                   "target; 1: all in this process, one after another).")
@json_option
def export(target, checkpoint, variant, use_ema, trust_checkpoint, resolution, batch, out_dir, force, precision,
           labels_file, seed, quantize, calibration, calibration_samples, keep_float, calibration_augment,
           calibration_method, dfq, verify_images, no_verify, jobs, as_json, **own_options):
    """Export a checkpoint (or an untrained variant) to on-device artifacts, each with a manifest beside it."""
    from .atomic import sigterm_as_interrupt
    from .export import ExportOptions, resolve_targets
    from .models.source import load_source
    from .models.variants import parse_resolution
    from .pipeline import export as run_export

    err = _stderr()
    jobs = _jobs(jobs)
    with sigterm_as_interrupt():
        profiles = resolve_targets(target)
        source = load_source(variant=variant, checkpoint=checkpoint, use_ema=use_ema,
                             trust_checkpoint=trust_checkpoint, labels_file=labels_file, seed=seed)
        if source.untrained:
            err.print(f"[bold yellow]WARNING: no --checkpoint: exporting UNTRAINED {source.variant} weights "
                      f"(seed {seed}). Such artifacts are only for pipeline and latency checks; their "
                      "predictions mean nothing.[/]")
        options = ExportOptions.create(
            resolution=parse_resolution(resolution, source.default_resolution), batch=batch,
            precision=precision, quantize=quantize, calibration=calibration,
            calibration_samples=calibration_samples, keep_float=tuple(keep_float),
            calibration_augment=calibration_augment, calibration_method=calibration_method, dfq=dfq,
            **own_options)
        if (verify_images is not None or no_verify) and not quantize:
            raise UsageError("--images and --no-verify apply with --quantize")
        if verify_images is not None:
            from .images import list_images

            list_images(verify_images)
        if calibration == "random":
            err.print("[bold yellow]WARNING: calibrating on random inputs: the int8 ranges will not be those of "
                      "real images. Pass --calibration DIR for an artifact to ship.[/]")
        with err.status("exporting ...", spinner="dots") as status:
            report = run_export(source, profiles, options, out_dir, force=force,
                                progress=lambda message: status.update(_plain(message)), jobs=jobs,
                                verify_quantized=not no_verify, images=verify_images)
            checks = report.verification
    if as_json:
        doc = {"artifacts": [a.as_json() for a in report.artifacts],
               "failures": [{"target": f.target, "profile": f.profile, "error": f.message}
                            for f in report.failures],
               "untrained": report.untrained}
        if quantize and not no_verify:
            doc["verification"] = [r.as_json() for r in checks]
        _emit_json(doc)
    else:
        from rich.table import Table

        table = Table(title="exported" + (" (UNTRAINED weights)" if report.untrained else ""))
        for col in ("target", "profile", "path", "size", "seconds"):
            table.add_column(col, overflow="fold")
        for a in report.artifacts:
            table.add_row(_cell(a.target), _cell(a.profile), _cell(a.path), f"{a.size_bytes / 1e6:.1f} MB",
                          f"{a.seconds:.1f}")
        _stdout().print(table)
    for failure in report.failures:
        err.print(f"[bold red]FAILED[/] {_plain(failure.target)} ({_plain(failure.profile)}): "
                  f"{_plain(failure.message)}", markup=True, highlight=False)
    for check in checks:
        m = next(iter(check.metrics.values()), {})
        summary = (f"cosine {m['cosine']:.5f}, SQNR {m['sqnr_db']:.1f} dB, top-1 agreement "
                   f"{m['top1_agreement']:.2f} ({check.tolerances['class']} tolerances)" if m else check.reason)
        colour = {"pass": "green", "fail": "bold red"}.get(check.status, "yellow")
        err.print(f"[{colour}]verify {check.status}[/] {_plain(Path(check.artifact).name)} against fp32: "
                  f"{_plain(summary)}", markup=True, highlight=False)
    if report.failures or any(c.status == "fail" for c in checks):
        sys.exit(1)


@cli.command()
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("--checkpoint", default=None, metavar="FILE",
              help="Reference checkpoint (default: the one each manifest names, read weights-only).")
@click.option("--trust-checkpoint", is_flag=True,
              help="Allow arbitrary pickled objects in the --checkpoint FILE (only that one: a checkpoint a "
                   "manifest names is always read weights-only). This runs code from the file: only for files "
                   "you trust.")
@click.option("--images", default=None, metavar="DIR",
              help="A folder of JPEG/PNG images, preprocessed as each manifest says.")
@click.option("--samples", default=8, show_default=True, type=SAMPLES.click(),
              help=f"Seeded random inputs besides the images (0: images only; {SAMPLES.describe()}).")
@click.option("--seed", default=0, show_default=True, type=SEED.click(),
              help="Seed of the random inputs (0 to 2**32 - 1).")
@click.option("--min-cosine", "cosine", type=COSINE.click(), default=None,
              help="Override the minimum cosine similarity the artifact's manifest (or profile) sets.")
@click.option("--max-abs", "max_abs", type=MAX_ABS.click(), default=None,
              help="Override the largest absolute difference.")
@click.option("--min-top1", "top1_agreement", type=FRACTION.click(), default=None,
              help="Override the minimum top-1 agreement (0..1).")
@click.option("--min-sqnr", "sqnr_db", type=SQNR_DB.click(), default=None, metavar="DB",
              help="Also require this SQNR in dB (or override the manifest's).")
@click.option("--threads", type=THREADS.click(), default=None,
              help="Threads of each runtime (default: the runtime's).")
@click.option("--runtime", "runtimes", multiple=True, metavar="NAME",
              help="Also run this interpreter setting, beside each artifact's own runtime: coreml-sim (Core ML's "
                   "ML program in NumPy, what verify runs off macOS), or coreml-sim:flush-subnormals (Neural "
                   "Engine-like), coreml-sim:fp16-accumulation (GPU-like), coreml-sim:flush-subnormals+"
                   "fp16-accumulation. Repeatable.")
@json_option
def verify(paths, checkpoint, trust_checkpoint, images, samples, seed, cosine, max_abs, top1_agreement, sqnr_db,
           threads, runtimes, as_json):
    """Run each artifact in its runtime and compare it with the PyTorch model it came from.

    PATH is an artifact or a folder of artifacts. Each artifact runs in a process of its own, so one that
    crashes its runtime fails alone. Core ML packages run in Core ML on macOS and in the coreml-sim interpreter
    elsewhere, which also fails an fp16 op that overflows and reports the op with the least fp16 headroom.
    Exit 0 when every result passes or is skipped, 1 when any fails, 2 for usage or input errors. A manifest
    that cannot be updated with the result (a read-only folder) is a warning: the results are printed and
    decide the exit code."""
    from rich.text import Text

    from .atomic import sigterm_as_interrupt
    from .verify import FAIL, VerifyOptions, check_options, verify as run_verify

    overrides = {k: v for k, v in (("cosine", cosine), ("max_abs", max_abs), ("top1_agreement", top1_agreement),
                                   ("sqnr_db", sqnr_db)) if v is not None}
    options = VerifyOptions(images=images, samples=samples, seed=seed, checkpoint=checkpoint,
                            trust_checkpoint=trust_checkpoint, overrides=overrides, threads=threads,
                            runtimes=tuple(dict.fromkeys(runtimes)))
    check_options(options)
    err = _stderr()
    if trust_checkpoint:
        err.print(Text(f"WARNING: --trust-checkpoint: {checkpoint} is loaded with arbitrary pickled objects "
                       "allowed (it can run code); checkpoints named by manifests are not.", style="bold yellow"))
    warnings: list[str] = []
    with sigterm_as_interrupt(), err.status("verifying ...", spinner="dots") as status:
        # data (paths, reasons) never goes through rich markup: a path holding "[/x]" would crash it
        results = run_verify(paths, options, progress=lambda message: status.update(Text(message)),
                             warn=warnings.append)
    if as_json:
        _emit_json({"results": [r.as_json() for r in results], "warnings": warnings})
    else:
        from rich.table import Table

        table = Table(title="verify")
        for col in ("artifact", "runtime", "status", "cosine", "max abs", "SQNR dB", "top-1", "top-5", "reason"):
            table.add_column(col, overflow="fold")
        colours = {"pass": "green", "fail": "bold red", "skipped": "yellow"}
        for r in results:
            m = next(iter(r.metrics.values()), {})
            cells = [_fmt(m.get("cosine"), ".6f"), _fmt(m.get("max_abs"), ".2e"), _fmt(m.get("sqnr_db"), ".1f"),
                     _fmt(m.get("top1_agreement"), ".3f"), _fmt(m.get("top5_overlap"), ".3f")]
            table.add_row(Text(r.artifact), Text(r.runtime), Text(r.status, style=colours.get(r.status, "")),
                          *map(Text, cells), Text(r.reason))
        _stdout().print(table)
    for warning in warnings:
        err.print(Text(f"WARNING: {warning}", style="bold yellow"))
    if any(r.status == FAIL for r in results):
        sys.exit(1)


@cli.command()
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("--threads", type=THREADS.click(), default=1, show_default=True,
              help="Threads of every runtime and of the eager baseline; each runs pinned to that many CPUs.")
@click.option("--warmup", type=WARMUP.click(), default=10, show_default=True,
              help="Untimed inferences after the first.")
@click.option("--iterations", type=ITERATIONS.click(), default=None,
              help=f"Timed inferences per candidate (default {BENCH_ITERATIONS}).")
@click.option("--seconds", type=SECONDS.click(), default=None, help="Time each candidate for this long instead.")
@click.option("--rounds", type=ROUNDS.click(), default=5, show_default=True,
              help="The timed inferences are split into this many rounds that alternate between candidates.")
@click.option("--no-baseline", is_flag=True, help="Skip the PyTorch eager baseline (no ratio_to_eager).")
@click.option("--report", "report_dir", default=None, metavar="DIR",
              help="Also write report.md and report.html (table and plots) into DIR.")
@json_option
def bench(paths, threads, warmup, iterations, seconds, rounds, no_baseline, report_dir, as_json):
    """Host latency of each artifact in the runtime that ships it, side by side with PyTorch eager.

    PATH is an artifact or a folder of artifacts. Each candidate runs in its own process pinned to --threads
    CPUs; rounds alternate between candidates. The results (table or --json) are printed first, then the
    skipped and failed candidates, then the --report outcome. Exit 1 when a candidate failed to run; exit 2 for
    a bad option, an input that cannot be used, or a --report that cannot be written (checked before the run;
    a write that fails anyway after it still prints the results first)."""
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.text import Text

    from .atomic import sigterm_as_interrupt
    from .bench import BenchOptions, bench as run_bench, check_options

    options = BenchOptions(threads=threads, warmup=warmup, iterations=iterations, seconds=seconds, rounds=rounds,
                           baseline=not no_baseline)
    check_options(options)
    if report_dir is not None:
        from .bench.report import check_report_dir, require_matplotlib

        require_matplotlib()
        check_report_dir(report_dir)  # before the benchmark: a bad --report costs no run
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with sigterm_as_interrupt(), Progress(*columns, console=_stderr(), transient=True) as bar:
        task = bar.add_task("benchmarking", total=None)

        def progress(description: str, done: int, total: int) -> None:  # a path is data, never rich markup
            bar.update(task, description=escape(description), completed=done, total=total)

        report = run_bench(paths, options, progress=progress)
    doc = report.as_json()
    # the results first, whatever happens to the report afterwards
    if as_json:
        _emit_json(doc)
    else:
        _print_bench(doc)
    err = _stderr()
    for skipped in doc["skipped"]:
        err.print(Text.assemble(("skipped", "yellow"), f" {skipped['artifact']}: {skipped['reason']}"),
                  highlight=False, soft_wrap=True)
    for failure in doc["failures"]:
        err.print(Text.assemble(("FAILED", "bold red"), f" {failure['artifact']}: {failure['error']}"),
                  highlight=False, soft_wrap=True)
    if report_dir is not None:
        from .bench.report import write_report

        try:
            written = write_report(doc, report_dir)
        except (OSError, ShvitEdgeError) as exc:  # the results are printed above: say why, no traceback
            why = str(exc) if isinstance(exc, ShvitEdgeError) else \
                f"--report {report_dir}: the report was not written ({exc})"
            err.print(Text(f"Error: {why}"), highlight=False, soft_wrap=True)
            sys.exit(2)
        if not as_json:
            err.print(Text(f"wrote {', '.join(str(p) for p in written)}"), highlight=False, soft_wrap=True)
    if doc["failures"]:
        sys.exit(1)


def _print_bench(doc: dict) -> None:
    from rich.table import Table
    from rich.text import Text

    machine = doc["machine"]
    peak = machine.get("fp32_gemm_peak_gflops")
    title = Text(f"bench: {doc['settings']['threads']} thread(s) on {machine['processor']}"
                 + (f"; fp32 GEMM peak {peak:.0f} GFLOP/s" if peak else ""))
    rows = [*doc["baselines"], *doc["results"]]
    if not rows:
        _stdout().print(Text.assemble(title, ": no results (every candidate failed or was skipped)"))
        return
    table = Table(title=title)
    for col in ("artifact", "runtime", "batch", "p50 ms", "p90 ms", "min ms", "img/s", "x eager", "load ms",
                "first ms", "RSS MB", "GFLOP/s"):
        table.add_column(col, overflow="fold")
    for r in rows:
        lat = r["latency_ms"]
        name = r["artifact"] if r["target"] == "pytorch" else Path(r["artifact"]).name
        cells = (name, r["runtime"], str(r["batch"]), f"{lat['p50']:.2f}", f"{lat['p90']:.2f}", f"{lat['min']:.2f}",
                 f"{r['throughput_ips']:.1f}", _fmt(r["ratio_to_eager"], ".2f"), f"{r['load_ms']:.0f}",
                 f"{r['first_inference_ms']:.1f}", _fmt(r["peak_rss_mb"], ".0f"), f"{r['gflops']:.1f}")
        table.add_row(*(Text(cell) for cell in cells))  # names and runtimes are data, never rich markup
    _stdout().print(table)


@cli.command("quantize-report")
@click.option("--target", "target", required=True, metavar="TARGET",
              help="The target whose quantization is measured: coreml, executorch, tflite, onnx, a profile name "
                   "or a profile .toml.")
@click.option("--checkpoint", default=None, metavar="FILE", help="The trained checkpoint.")
@checkpoint_options
@click.option("--quantize", required=True, metavar="MODE", help="The --quantize mode to measure.")
@click.option("--calibration", default=None, metavar="DIR|random",
              help="Calibration images for a calibrated mode, as for export.")
@click.option("--calibration-samples", default=32, show_default=True, type=CALIBRATION_SAMPLES.click(),
              help="How many calibration inputs.")
@click.option("--images", default=None, metavar="DIR",
              help="Images to measure on (default: the --calibration folder, if it is one).")
@click.option("--samples", default=0, show_default=True, type=SAMPLES.click(),
              help="Seeded random inputs besides the images.")
@click.option("--resolution", default=None, metavar="N|HxW", help="Input size (default: the variant's).")
@click.option("--keep", default=3, show_default=True, type=LAYER_COUNT.click(),
              help="How many of the worst layers the report keeps in float to measure the gain.")
@click.option("--no-validate", "no_validate", is_flag=True,
              help="Simulate only; do not export and verify the artifact with and without the worst layers.")
@click.option("--show", default=15, show_default=True, type=LAYER_COUNT.click(),
              help="Layers listed in the table (all with --json).")
@click.option("--seed", default=0, show_default=True, type=SEED.click(),
              help="Seed of untrained weights and random inputs.")
@json_option
def quantize_report(target, checkpoint, variant, use_ema, trust_checkpoint, quantize, calibration,
                    calibration_samples, images, samples, resolution, keep, no_validate, show, seed, as_json):
    """Which layers quantization costs most: each layer quantized alone (simulated in PyTorch), worst first,
    and the measured gain of keeping the worst --keep in float (--keep-float) on the real artifact."""
    from .atomic import sigterm_as_interrupt
    from .export import ExportOptions, resolve_targets
    from .models.source import load_source
    from .models.variants import parse_resolution
    from .sensitivity import report as run_report

    err = _stderr()
    with sigterm_as_interrupt():
        profiles = resolve_targets(target)
        if len(profiles) != 1:
            raise UsageError("quantize-report measures one target at a time")
        source = load_source(variant=variant, checkpoint=checkpoint, use_ema=use_ema,
                             trust_checkpoint=trust_checkpoint, seed=seed)
        if source.untrained:
            err.print(f"[bold yellow]WARNING: no --checkpoint: measuring UNTRAINED {source.variant} weights "
                      f"(seed {seed}); a trained model's sensitivity differs.[/]")
        if images is None and calibration not in (None, "random") and Path(calibration).is_dir():
            images = calibration
        options = ExportOptions(resolution=parse_resolution(resolution, source.default_resolution),
                                quantize=quantize, calibration=calibration, calibration_samples=calibration_samples)
        with err.status("measuring ...", spinner="dots") as status:
            result = run_report(source, profiles[0], options, images=images, samples=samples, keep=keep,
                                validate=not no_validate, seed=seed, progress=lambda m: status.update(_plain(m)))
    if as_json:
        _emit_json(result.as_json())
        return
    from rich.table import Table

    table = Table(title=f"{result.variant} {result.target} --quantize {result.mode}: each layer quantized alone "
                        f"({result.inputs}; worst first)")
    for col, justify in (("layer", "left"), ("kind", "left"), ("params", "right"), ("SQNR dB", "right"),
                         ("noise share", "right")):
        # a layer's name is what --keep-float takes: never cut short, however narrow the console
        table.add_column(col, justify=justify, **({"no_wrap": True, "min_width": max(
            (len(c.layer) for c in result.layers[:max(show, 0)]), default=5)} if col == "layer" else {}))
    for c in result.layers[:max(show, 0)]:
        table.add_row(_cell(c.layer), _cell(c.kind), f"{c.params:,}", f"{c.sqnr_db:.1f}", f"{c.noise_share:.1%}")
    out = _stdout()
    out.print(table)
    out.print(f"simulated, every layer quantized: {result.simulated_sqnr_db:.1f} dB; "
              f"with {', '.join(result.keep)} in float: {result.simulated_sqnr_keep_db:.1f} dB", markup=False)
    if result.validation is not None:
        v = result.validation
        out.print(f"measured on the {result.target} artifact: {_fmt(v['sqnr_db'], '.1f')} dB; with "
                  f"--keep-float {' --keep-float '.join(result.keep)}: {_fmt(v['sqnr_keep_db'], '.1f')} dB",
                  markup=False)
    out.print(result.verdict, highlight=False, markup=False)


for _command in RESULTS_COMMANDS + DEVICE_COMMANDS:  # bundle, harness, results: cli_results.py; device: cli_device.py
    cli.add_command(_command)


def _jobs(value: str) -> int:
    from .export import usable_cpus

    if value == "auto":
        return min(usable_cpus(), JOBS.hi)
    try:
        jobs = int(value)
    except ValueError:
        raise UsageError(f"--jobs must be a whole number or auto, got {value!r}") from None
    return JOBS.check("--jobs", jobs)


def _end_by_signal(signum: int) -> None:
    """End this process by ``signum`` itself, as the Unix convention asks of a program that caught an
    interrupt and cleaned up: a shell then stops its loop (it goes on after a child that merely exits 130) and
    reports 130 (SIGINT) or 143 (SIGTERM); a Python parent sees -2 or -15. Doing it here also makes the end
    deterministic: CPython itself ends by SIGINT after sys.exit() when a KeyboardInterrupt once escaped a
    library's embedded ``PyRun_String`` (pybind11's ``py::exec``), which a Ctrl-C during a conversion can do."""
    import os
    import signal

    sys.stdout.flush()
    sys.stderr.flush()
    if os.name != "nt":
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    sys.exit(128 + signum)  # Windows, or the signal is blocked


def main(argv=None) -> None:
    """Console-script entry point: click's handling, except that an interrupt ends the process by its signal
    (exit status 130 for Ctrl-C, 143 for SIGTERM) after the command's cleanups have run, instead of click's
    generic exit 1."""
    import signal

    from .atomic import Terminated

    try:
        code = cli.main(args=argv, prog_name="shvit-edge", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:
        cause = exc if isinstance(exc, KeyboardInterrupt) else exc.__cause__ or exc.__context__
        click.echo("Aborted.", err=True)
        _end_by_signal(signal.SIGTERM if isinstance(cause, Terminated) else signal.SIGINT)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
