"""The ``shvit-edge`` command line: parse, call the library, render.

Exit codes: 0 success, 1 a check failed, 2 a usage or input error (see :mod:`shvit_edge.errors`).
``--json`` prints one JSON document on stdout; logs and progress go to stderr. Heavy libraries are
imported inside the commands, so ``shvit-edge --help`` stays fast.
"""

from __future__ import annotations

import json
import sys

import click

from . import __version__
from .errors import ShvitEdgeError


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


def _stdout():
    from rich.console import Console

    return Console(soft_wrap=False)


def _stderr():
    from rich.console import Console

    return Console(stderr=True)


def json_option(func):
    """``--json``: one JSON document on stdout instead of a table."""
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")(func)


def checkpoint_options(func):
    """The options every command that reads a checkpoint shares."""
    func = click.option("--trust-checkpoint", is_flag=True,
                        help="Allow arbitrary pickled objects in the checkpoint. This runs code from the "
                             "file: only for files you trust.")(func)
    func = click.option("--ema", "use_ema", is_flag=True,
                        help="Use the EMA weights (model_ema) of a training checkpoint.")(func)
    func = click.option("--variant", default=None, metavar="NAME",
                        help="The variant you expect (shvit_s1..shvit_s4); detected from the shapes if omitted, "
                             "an error if the checkpoint disagrees.")(func)
    return func


def _emit_json(doc) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=False))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="shvit-edge")
def cli():
    """Turn trained SHViT checkpoints into verified, benchmarked on-device artifacts."""


@cli.command()
@json_option
def variants(as_json: bool):
    """List the SHViT variants: default resolution, fused parameters and MACs (measured on the model)."""
    from .models.variants import VARIANTS, variant_stats

    rows = []
    with _stderr().status("measuring parameters and MACs of each variant ...", spinner="dots"):
        for spec in VARIANTS.values():
            stats = variant_stats(spec.name)
            rows.append({
                "variant": spec.name, "resolution": spec.resolution, "params": stats["params"],
                "macs": stats["macs"], "embed_dim": list(spec.embed_dim), "depth": list(spec.depth),
                "partial_dim": list(spec.partial_dim), "qk_dim": list(spec.qk_dim), "types": list(spec.types),
                "mean": list(spec.mean), "std": list(spec.std),
            })
    if as_json:
        _emit_json({"variants": rows})
        return
    from rich.table import Table

    table = Table(title="SHViT variants (fused, 1000 classes, MACs at the default resolution)")
    for col, justify in (("variant", "left"), ("resolution", "right"), ("params", "right"), ("MACs", "right"),
                         ("embed_dim", "left"), ("depth", "left"), ("partial_dim", "left")):
        table.add_column(col, justify=justify)
    for r in rows:
        table.add_row(r["variant"], str(r["resolution"]), f"{r['params'] / 1e6:.2f}M", f"{r['macs'] / 1e6:.0f}M",
                      str(r["embed_dim"]), str(r["depth"]), str(r["partial_dim"]))
    _stdout().print(table)


@cli.command()
@click.argument("checkpoint", metavar="CHECKPOINT")
@checkpoint_options
@json_option
def inspect(checkpoint: str, variant: str | None, use_ema: bool, trust_checkpoint: bool, as_json: bool):
    """Say what a checkpoint holds: layout, variant, classes, distillation head, EMA, dtype."""
    from .models.checkpoint import load_checkpoint
    from .models.variants import count_params

    loaded = load_checkpoint(checkpoint, variant=variant, use_ema=use_ema, trust_checkpoint=trust_checkpoint)
    info = loaded.describe()
    info["params"] = count_params(loaded.model)
    if as_json:
        _emit_json(info)
        return
    from rich.table import Table

    table = Table(title=f"checkpoint {checkpoint}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in info.items():
        table.add_row(key, str(value))
    _stdout().print(table)


def main(argv=None) -> None:
    """Console-script entry point."""
    try:
        cli.main(args=argv, prog_name="shvit-edge")
    except KeyboardInterrupt:  # click turns it into Abort inside main(); this covers the gaps around it
        click.echo("Aborted.", err=True)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
