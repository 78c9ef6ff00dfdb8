"""shvit-edge bench against a hostile user: numbers outside their range, artifacts changed after verify, a
--report that cannot be written, runs where everything fails, runtimes that abort, a parent killed with SIGKILL
and names that look like rich markup. Each test fails on the bench before these fixes.

Every run is tiny: one untrained S1 ONNX at 64x64 (exported once for the module), two timed inferences in one
round, no warm-up, no eager baseline."""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import child_pids, is_running
from shvit_edge.cli import cli

SCHEMA = Path(__file__).resolve().parent.parent / "shvit_edge" / "schemas" / "bench.schema.json"
TINY = ["--iterations", "2", "--rounds", "1", "--warmup", "0", "--no-baseline"]


@pytest.fixture(scope="module")
def onnx_artifact(untrained_s1_64, tmp_path_factory) -> Path:
    """S1 (untrained: latency does not depend on the weights) at 64x64 as ONNX: a private copy of conftest's
    shared export (``untrained_s1_64``), with its manifest."""
    import shutil

    folder = tmp_path_factory.mktemp("hardening")
    for name in ("shvit_s1_64x64.onnx", "shvit_s1_64x64.onnx.json"):
        shutil.copy2(untrained_s1_64 / name, folder / name)
    return folder / "shvit_s1_64x64.onnx"


def place(artifact: Path, folder: Path, name: str, content: bytes | None = None, **manifest_changes) -> Path:
    """A copy of ``artifact`` (or ``content`` in its place) as ``folder/name``, with its manifest beside it; the
    manifest's file name, size and sha256 are the copy's, and ``manifest_changes`` are set on top."""
    from shvit_edge.atomic import sha256_of

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if content is None:
        shutil.copy(artifact, path)
    else:
        path.write_bytes(content)
    manifest = json.loads(Path(f"{artifact}.json").read_text())
    manifest["artifact"].update(file=name, sha256=sha256_of(path), size_bytes=path.stat().st_size)
    manifest.update(manifest_changes)
    Path(f"{path}.json").write_text(json.dumps(manifest, indent=2))
    return path


def invoke(args, **kwargs):
    return CliRunner().invoke(cli, ["bench", *map(str, args)], **kwargs)


def validate(doc: dict) -> None:
    import jsonschema

    jsonschema.validate(doc, json.loads(SCHEMA.read_text()))


# 1. every numeric option within its declared range -------------------------------------------------------------

@pytest.mark.parametrize("option,value", [
    ("--seconds", "nan"), ("--seconds", "inf"), ("--seconds", "-inf"), ("--seconds", "0"), ("--seconds", "1e9"),
    ("--iterations", "0"), ("--iterations", "1000001"), ("--iterations", "2.5"), ("--iterations", "nan"),
    ("--warmup", "-1"), ("--warmup", "nan"), ("--warmup", "100001"),
    ("--rounds", "0"), ("--rounds", "inf"), ("--rounds", "1001"),
    ("--threads", "0"), ("--threads", "nan"), ("--threads", "1025"),
])
def test_a_number_outside_its_range_is_a_one_line_usage_error(tmp_path, option, value):
    """NaN made --seconds time forever; now every numeric option is refused by click, before anything runs
    (the path does not even exist: the option is what is reported)."""
    result = invoke([tmp_path / "missing.onnx", option, value])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and f"Invalid value for '{option}'" in errors[0], result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("changes,name", [
    ({"seconds": float("nan")}, "--seconds"), ({"seconds": float("inf")}, "--seconds"),
    ({"seconds": 1e9}, "--seconds"), ({"seconds": -1.0}, "--seconds"),
    ({"iterations": 2.5}, "--iterations"), ({"iterations": 10 ** 7}, "--iterations"),
    ({"warmup": -1}, "--warmup"), ({"warmup": float("nan")}, "--warmup"),
    ({"rounds": 0}, "--rounds"), ({"rounds": 10 ** 6}, "--rounds"), ({"rounds": 2.0}, "--rounds"),
    ({"threads": 0}, "--threads"), ({"threads": 1.0}, "--threads"), ({"threads": True}, "--threads"),
])
def test_the_library_checks_the_same_ranges(changes, name):
    from shvit_edge.bench import BenchOptions, bench, check_options
    from shvit_edge.errors import UsageError

    options = BenchOptions(**changes)
    with pytest.raises(UsageError, match=f"^{name} must be"):
        check_options(options)
    with pytest.raises(UsageError, match=f"^{name} must be"):  # before any artifact is looked at
        bench(["/nonexistent"], options)


def test_the_threads_limit_is_still_the_usable_cpus():
    from shvit_edge.bench import BenchOptions, check_options, usable_cpus
    from shvit_edge.errors import UsageError

    check_options(BenchOptions(threads=len(usable_cpus())))
    with pytest.raises(UsageError, match="CPUs this process may use"):
        check_options(BenchOptions(threads=len(usable_cpus()) + 1))


# 2. a verify result is quoted only for the file that was verified -----------------------------------------------

VERIFIED = {"shvit_edge_version": "0.1.0", "verified_at": "2025-01-01T00:00:00+00:00",
            "inputs": {"images": [], "random": 8, "seed": 0}, "reference": None,
            "results": [{"runtime": "onnxruntime", "status": "pass", "reason": "within tolerance",
                         "metrics": {"logits": {"cosine": 0.999999, "sqnr_db": 80.0, "top1_agreement": 1.0}}}]}


def test_an_artifact_changed_after_verify_is_not_quoted_with_the_old_result(onnx_artifact, tmp_path):
    import onnx

    same = place(onnx_artifact, tmp_path / "models", "same.onnx", verification=VERIFIED)
    changed = place(onnx_artifact, tmp_path / "models", "changed.onnx", verification=VERIFIED)
    model = onnx.load(changed)  # still a valid model, and no longer the file that was verified
    model.doc_string = "edited after verify"
    onnx.save(model, changed)

    result = invoke([tmp_path / "models", *TINY, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    validate(doc)
    verify = {Path(r["artifact"]).name: r["verify"] for r in doc["results"]}
    assert verify[same.name] == {"status": "pass", "cosine": 0.999999, "sqnr_db": 80.0, "top1_agreement": 1.0}
    stale = verify[changed.name]
    assert stale["status"] == "stale" and "cosine" not in stale, stale
    assert "changed after it was verified" in stale["reason"]

    from shvit_edge.bench.report import _table

    _, body = _table(doc)  # the report's "verify cosine" column says stale, not the old cosine
    assert sorted(row[-1] for row in body) == ["1.00000", "stale"]


def test_a_result_of_another_file_is_stale_even_when_the_manifest_sha256_was_rewritten(onnx_artifact, tmp_path):
    """verify records the sha256 of the file it ran: an artifact swapped together with its manifest's sha256
    (the manifest is data anyone can edit) is not quoted with the old result."""
    import onnx

    from shvit_edge.atomic import sha256_of

    verified = dict(VERIFIED, artifact_sha256=sha256_of(onnx_artifact))
    kept = place(onnx_artifact, tmp_path / "models", "kept.onnx", verification=verified)
    swapped = place(onnx_artifact, tmp_path / "edited", "swapped.onnx")
    model = onnx.load(swapped)
    model.doc_string = "another model"
    onnx.save(model, swapped)
    swapped = place(swapped, tmp_path / "models", "swapped.onnx", verification=verified)  # sha256 rewritten
    result = invoke([tmp_path / "models", *TINY, "--json"])
    assert result.exit_code == 0, result.output
    verify = {Path(r["artifact"]).name: r["verify"] for r in json.loads(result.stdout)["results"]}
    assert verify[kept.name]["status"] == "pass"
    assert verify[swapped.name]["status"] == "stale"


def test_an_artifact_that_is_no_regular_file_is_a_failure_not_a_hang(onnx_artifact, tmp_path):
    """A FIFO in the artifact's place would block the runtime reading it forever; it is refused unread."""
    fifo = tmp_path / "models" / "fifo.onnx"
    place(onnx_artifact, tmp_path / "models", "fifo.onnx")
    fifo.unlink()
    os.mkfifo(fifo)
    result = invoke([fifo, *TINY, "--json"])
    # refused when the artifacts are found (exit 2), or else when bench hashes it (a failure, exit 1)
    assert result.exit_code in (1, 2), result.output
    assert "not a regular file" in result.output and "Traceback" not in result.output


# 3. --report: checked before the run, and a late failure loses no results ----------------------------------------

@pytest.mark.parametrize("case", ["a file", "under a file", "report.md is a folder"])
def test_a_report_that_cannot_be_written_is_refused_before_the_run(onnx_artifact, tmp_path, case):
    (tmp_path / "file").write_text("x")
    report = {"a file": tmp_path / "file", "under a file": tmp_path / "file" / "sub",
              "report.md is a folder": tmp_path / "out"}[case]
    if case == "report.md is a folder":
        (report / "report.md").mkdir(parents=True)
        (report / "report.md" / "mine").write_text("not to be replaced")
    result = invoke([onnx_artifact, *TINY, "--report", report])
    assert result.exit_code == 2, result.output
    assert result.stdout == "", "the benchmark ran before --report was checked"
    assert "--report" in result.output and "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
    if case == "report.md is a folder":
        assert (report / "report.md" / "mine").read_text() == "not to be replaced"


@pytest.mark.parametrize("as_json", [True, False])
def test_a_report_that_fails_after_the_run_still_prints_the_results(onnx_artifact, tmp_path, monkeypatch, as_json):
    """The disk fills up during the run: the results are printed, then the write failure, exit 2."""
    import shvit_edge.bench.report as report_module

    def disk_full(doc, out_dir):
        raise OSError(errno.ENOSPC, "No space left on device", str(out_dir))

    monkeypatch.setattr(report_module, "write_report", disk_full)
    result = invoke([onnx_artifact, *TINY, "--report", tmp_path / "out", *(["--json"] if as_json else [])],
                    env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    if as_json:
        doc = json.loads(result.stdout)
        validate(doc)
        assert [Path(r["artifact"]).name for r in doc["results"]] == [onnx_artifact.name]
    else:
        assert "bench: 1 thread(s)" in result.stdout and onnx_artifact.name in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "--report" in errors[0], result.stderr


# 4. every candidate fails: the failures are printed, the report says there are no results -----------------------

def test_when_every_candidate_fails_the_failures_are_printed_and_the_report_says_so(onnx_artifact, tmp_path):
    broken = place(onnx_artifact, tmp_path / "a[/x]", "broken.onnx", content=b"garbage")
    report = tmp_path / "report"
    result = invoke([broken, *TINY, "--report", report, "--json"])
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    validate(doc)
    assert doc["results"] == [] and [f["artifact"] for f in doc["failures"]] == [str(broken)]
    assert f"FAILED {broken}: " in result.stderr  # verbatim, though the folder's name looks like rich markup
    markdown = (report / "report.md").read_text()
    assert "No results" in markdown and f"FAILED {broken}" in markdown
    assert 'id="no-results"' in (report / "report.html").read_text()
    assert sorted(p.name for p in report.iterdir()) == ["report.html", "report.md"]  # no empty plots


def test_the_table_says_when_there_are_no_results(onnx_artifact, tmp_path):
    broken = place(onnx_artifact, tmp_path, "broken.onnx", content=b"garbage")
    result = invoke([broken, *TINY])
    assert result.exit_code == 1, result.output
    assert "no results" in result.stdout and f"FAILED {broken}" in result.stderr


# 5. a worker that dies: how it ended, and only lines that read as errors ------------------------------------------

def test_a_runtime_that_aborts_is_reported_by_its_signal_not_by_a_warning(onnx_artifact, tmp_path):
    """A garbage .pte makes ExecuTorch's load_program abort (SIGABRT) while its log's last line is torch's
    deprecation warning ("... will be an error in a future release"), which used to be quoted as the reason."""
    pytest.importorskip("executorch.runtime")
    manifest = json.loads(Path(f"{onnx_artifact}.json").read_text())
    broken = place(onnx_artifact, tmp_path, "broken.pte", content=random.Random(0).randbytes(4096),
                   target="executorch", profile="android-arm64-executorch", details={},
                   versions={"torch": manifest["versions"]["torch"]})
    result = invoke([broken, *TINY, "--json"])
    assert result.exit_code == 1, result.output
    (failure,) = json.loads(result.stdout)["failures"]
    error = failure["error"]
    assert error.startswith("the benchmark process was killed by SIGABRT"), error
    assert "load_program" in error, error  # the worker's faulthandler names where it died
    assert not re.search(r"warn|deprecat|register_constant", error, re.IGNORECASE), error


def test_the_reason_of_a_dead_worker_never_quotes_a_warning():
    from shvit_edge.bench import worker_ended

    warning = ("W1202 06:04:15.145000 5712 torch/utils/_pytree.py:630] <enum 'KernelPreference'> is an Enum "
               "subclass ... Calling register_constant() on Enum subclasses is deprecated and will be an error in "
               "a future release.")
    assert worker_ended(-signal.SIGKILL, f"{warning}\n") == \
        "the benchmark process was killed by SIGKILL (its log holds no error message)"
    assert worker_ended(-200, "") == "the benchmark process was killed by signal 200 (its log holds no error message)"
    traceback = ('Traceback (most recent call last):\n  File "/x/errors.py", line 3, in raise_error\n'
                 "RuntimeError: Failed to load program\n"
                 "/x/warnings.py:1: UserWarning: an error may follow\n")
    assert worker_ended(1, traceback) == \
        "the benchmark process exited with code 1: RuntimeError: Failed to load program"
    abort = (f"{warning}\nterminate called after throwing an instance of 'pybind11::error_already_set'\n"
             "  what():  UnicodeDecodeError: invalid start byte\n")
    assert worker_ended(-signal.SIGABRT, abort) == (
        "the benchmark process was killed by SIGABRT: terminate called after throwing an instance of "
        "'pybind11::error_already_set' / what():  UnicodeDecodeError: invalid start byte")


# 6. workers die with a SIGKILLed bench --------------------------------------------------------------------------

@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_workers_do_not_outlive_a_sigkilled_bench(onnx_artifact):
    proc = subprocess.Popen([sys.executable, "-m", "shvit_edge.cli", "bench", str(onnx_artifact), "--seconds", "600",
                             "--rounds", "1", "--warmup", "0", "--no-baseline", "--json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the worker has imported its runtime (and then loads in < 1 s)
            time.sleep(0.3)
            workers = [pid for pid in child_pids(proc.pid) if is_running(pid)]
            if workers and _maps(workers[0], "onnxruntime"):
                break
        assert workers and _maps(workers[0], "onnxruntime"), "the worker did not start"
        time.sleep(3)  # loaded, and timing its 600 seconds
        assert proc.poll() is None and is_running(workers[0])
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(is_running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in workers if is_running(pid)], "a worker outlived its SIGKILLed bench"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in workers:  # the old behaviour: do not leave it timing for 10 minutes
            if is_running(pid):
                os.kill(pid, signal.SIGKILL)


def _maps(pid: int, library: str) -> bool:
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


# 7. data never goes through rich markup ------------------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def test_names_that_look_like_markup_are_shown_verbatim(onnx_artifact, tmp_path):
    """``models[v1.0]`` used to lose its ``[v1.0]`` (read as a style), and ``a[/x]`` crashed rich (a closing tag
    without an opening one). Run as on a terminal, so the progress bar's descriptions are drawn too."""
    artifact = place(onnx_artifact, tmp_path / "models[v1.0]", "shvit[v1.0].onnx")
    report = tmp_path / "a[/x]"
    result = invoke([artifact.parent, *TINY, "--report", report],
                    env={"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    out, err = ANSI.sub("", result.stdout), ANSI.sub("", result.stderr)
    assert "shvit[v1.0].onnx" in out, out  # the table's cell
    assert "shvit[v1.0].onnx" in err, err  # the progress bar's "loading ..." / "round 1/1: ..."
    assert f"wrote {report / 'report.md'}, {report / 'report.html'}" in err, err
    assert (report / "report.md").is_file()
