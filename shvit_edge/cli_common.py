"""What every command of the ``shvit-edge`` command line shares: the consoles, ``--json`` and number cells."""

from __future__ import annotations

import json
import sys

import click


def stdout():
    from rich.console import Console

    return Console(soft_wrap=False)


def stderr():
    """A console on a duplicate of the process's stderr: converters' C++ logs are held back by redirecting
    file descriptor 2 while they run (backends/_quiet.py); progress written here still shows."""
    import os

    from rich.console import Console

    try:
        handle = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1, encoding="utf-8")
    except (AttributeError, OSError, ValueError):  # no real descriptor (e.g. a test runner's capture)
        return Console(stderr=True)
    return Console(file=handle)


def json_option(func):
    """``--json``: one JSON document on stdout instead of a table."""
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")(func)


def emit_json(doc) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=False))


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)
