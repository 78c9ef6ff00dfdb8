"""One artifact in its runtime, in a process of its own: ``python -m shvit_edge.verify_worker REQUEST``.

:func:`shvit_edge.verify.verify` starts one such process per artifact, so a runtime that aborts (a C++
``abort()`` or a segmentation fault on a corrupt file kills the whole process, which no ``except`` catches)
costs that artifact's result, not the command. The parent checks the sha256, computes the PyTorch reference and
judges; everything here touches the runtime libraries: the backend's structural check, whether the artifact can
run on this machine, loading it (once per Core ML compute-unit setting) and running the inputs through it.

``REQUEST`` is a JSON file the parent wrote: ``parent_pid``, ``artifact``, ``manifest`` (the manifest as
JSON), ``manifest_path``, ``threads``, ``compute_units`` (a list for Core ML, else null), ``inputs`` (a
``.npy`` file) and ``status`` (where this process writes its JSON status) and ``outputs`` (a folder for one
``.npy`` per run). The status is rewritten (atomically) after every step, with the step about to run in
``stage``, so a process that dies leaves behind what it finished and where it died:

- ``structure``: ``{"problems": [...], "facts": {...}, "arrays": {...}}`` of the backend's structural check (if
  it has one); ``arrays`` names the ``.npy`` files (in ``outputs``) of the weights the backend's
  ``weights_for_reference`` gives, which the parent checks against the reference model (``reference_problems``);
- ``cannot_run_here``: why this machine cannot run the artifact, or null;
- ``runs``: per runtime setting (Core ML's compute units or interpreter modes; one entry, ``compute_units``
  null, for other backends) the runtime's name, the input the runtime itself reports (``name``, ``shape``,
  ``dtype``), the ``output`` file, ``error`` and ``details`` (what the runner reports: the interpreter's fp16
  headroom);
- ``error``: a failure outside any run; ``stage`` is ``done`` once the process has nothing more to do.

Stdout and stderr go to a file the parent reads only if this process dies (its last error line explains the
death). The backends hold back their C++ logs while they work (backends/_quiet.py); here they are let through to
that file instead, or an abort's own message would be lost with the process.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from ._process import signal_name
from .errors import describe_exception

DONE = "done"
#: a line of a dead child's output that says what went wrong (the last one is reported)
_ERROR_LINE = re.compile(r"error|abort|fatal|fail|exception|terminat|assert|what\(\)|segmentation|fault|panic|"
                         r"killed|out of memory", re.IGNORECASE)
#: ... unless it is a warning (glog's ``W1202 06:05:48`` prefix, Python's warnings)
_WARNING_LINE = re.compile(r"^W\d{4} |warning|deprecat", re.IGNORECASE)


class _Status:
    def __init__(self, path: Path):
        self.path = path
        self.doc = {"stage": "starting", "structure": None, "cannot_run_here": None, "runs": [], "error": None,
                    "log_offset": 0}
        self.write()

    def stage(self, stage: str) -> None:
        """Say which step runs now, and where its output starts in the log (a death is explained by its own
        step's output, not by an earlier step's noise)."""
        self.doc["stage"] = stage
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
            sys.stderr.flush()
            self.doc["log_offset"] = os.lseek(2, 0, os.SEEK_CUR)
        self.write()

    def write(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.doc, default=str), encoding="utf-8")
        os.replace(tmp, self.path)


@contextlib.contextmanager
def _let_through():
    """Stands in for backends/_quiet.py's ``quiet`` here: this process's output is a log file already."""
    yield


def _unquiet(backend) -> None:
    """Replace ``quiet`` wherever the backend took it: its module, or every module of its package (a package's
    modules each import ``quiet`` themselves, so replacing the package's alone would silence them still)."""
    from .backends import _quiet

    inside = backend.__name__ + "."
    modules = [backend, _quiet, *(m for name, m in list(sys.modules.items()) if name.startswith(inside))]
    for module in modules:
        if hasattr(module, "quiet"):
            module.quiet = _let_through


def _work(request: dict, status: _Status) -> None:
    import numpy as np

    from ._strict import from_mapping
    from .backends.registry import ensure_registered, get_backend
    from .manifest import Manifest
    from .parity.run import input_mismatch, run_batched

    ensure_registered(request.get("backend"))  # a backend registered by the caller's own code
    manifest = from_mapping(Manifest, request["manifest"], Path(request["manifest_path"]))
    backend = get_backend(manifest.target)
    _unquiet(sys.modules[type(backend).__module__])
    status.stage("importing the runtime")
    backend.import_runtime()
    path = Path(request["artifact"])
    if backend.has_structural_check:
        status.stage("running the structural check")
        problems, facts = backend.structural_problems(path, manifest)
        status.doc["structure"] = {"problems": [str(p) for p in problems], "facts": dict(facts), "arrays": {}}
        if problems:
            return
    if status.doc["structure"] is not None and backend.has_reference_check:
        status.stage("reading the weights checked against the reference")
        for key, value in backend.weights_for_reference(path, manifest).items():
            name = f"structure_{len(status.doc['structure']['arrays'])}.npy"
            np.save(Path(request["outputs"]) / name, np.asarray(value), allow_pickle=False)
            status.doc["structure"]["arrays"][key] = name
        status.write()
    settings = request["compute_units"] or [None]
    if any(s not in backend.interpreters for s in settings):  # an interpreter runs anywhere
        status.stage("asking whether it can run here")
        status.doc["cannot_run_here"] = backend.cannot_run_here(path, manifest)
        if status.doc["cannot_run_here"] is not None:
            return
    x = np.load(request["inputs"], allow_pickle=False)
    spec = manifest.inputs[0]
    for i, units in enumerate(settings):
        run = {"compute_units": units, "runtime": units if units in backend.interpreters else manifest.target,
               "input": None, "output": None, "error": None, "details": None}
        status.doc["runs"].append(run)
        on = f" on {units}" if units else ""
        status.stage(f"loading the artifact{on}")
        try:
            runner = backend.load(path, manifest, request["threads"], units)
            run["runtime"] = runner.runtime
            run["input"] = {"name": runner.input_name, "shape": list(runner.input_shape),
                            "dtype": runner.input_dtype}
            # a wrong input shape is reported by the parent; feeding it proves nothing more
            if not input_mismatch(runner.input_shape, runner.input_dtype, spec):
                status.stage(f"running the inputs{on}")
                out = run_batched(runner, x, manifest)
                name = f"output_{i}.npy"
                np.save(Path(request["outputs"]) / name, np.asarray(out), allow_pickle=False)
                run["output"] = name
                if runner.report is not None:
                    run["details"] = runner.report()
        except Exception as exc:  # noqa: BLE001 - the runtime's own failure is this run's result
            run["error"] = describe_exception(exc)
        status.write()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    request = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    from ._process import die_with_parent

    die_with_parent(int(request["parent_pid"]))
    warnings.simplefilter("ignore")  # the log is read for the error that killed a process, not for warnings
    status = _Status(Path(request["status"]))
    try:
        _work(request, status)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which judges
        status.doc["error"] = describe_exception(exc)
    status.stage(DONE)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # nothing is left to do: a runtime's teardown neither costs time nor can crash after the result


# --- the parent's end ------------------------------------------------------------------------------------------


@dataclass
class ChildReport:
    """What a child left: its last status, its exit code, its outputs (by file name) and its last error line."""

    status: dict
    returncode: int
    outputs: dict
    last_error: str

    def output(self, name: str):
        return self.outputs[name]

    def ended(self) -> str:
        """Why the child gave no result for the step it was in: it crashed (a signal), or exited early."""
        rc = self.returncode
        if rc < 0:
            what = f"the runtime crashed: killed by {signal_name(-rc)}"
        elif rc == 0:
            what = "the runtime process ended without a result"
        else:
            what = f"the runtime process ended with exit code {rc}"
        stage = self.status.get("stage")
        where = f" while {stage}" if stage not in (None, DONE) else ""
        line = f"; its last error output: {self.last_error}" if self.last_error else ""
        return what + where + line


def _last_error(log: Path, offset: int = 0) -> str:
    """The last line of ``log`` after ``offset`` that looks like an error (else its last line), without colour
    codes."""
    try:
        with open(log, "rb") as fh:
            end = fh.seek(0, os.SEEK_END)
            fh.seek(max(offset, end - 65536, 0))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines() if ln.strip()]
    errors = [ln for ln in lines if _ERROR_LINE.search(ln) and not _WARNING_LINE.search(ln)]
    found = errors[-1] if errors else (lines[-1] if lines else "")
    return found[:300]


class RuntimeChild:
    """One artifact's child process, from the parent: :meth:`start` it, do other work, :meth:`wait` for its
    report. As a context manager it kills a child still running on the way out (an error, Ctrl-C) and removes
    the temporary folder (request, inputs, status, outputs, log)."""

    def __init__(self, folder: Path, process: subprocess.Popen, log):
        self.folder, self.process, self.log = folder, process, log

    @classmethod
    def start(cls, artifact: Path, manifest, x, threads: int | None, compute_units) -> RuntimeChild:
        import dataclasses

        import numpy as np

        from .backends.registry import origin
        from .manifest import manifest_path

        folder = Path(tempfile.mkdtemp(prefix="shvit-edge-verify-"))
        try:
            np.save(folder / "inputs.npy", x, allow_pickle=False)
            (folder / "outputs").mkdir()
            request = {"parent_pid": os.getpid(), "artifact": str(artifact), "manifest": dataclasses.asdict(manifest),
                       "manifest_path": str(manifest_path(artifact)), "threads": threads,
                       "compute_units": compute_units, "inputs": str(folder / "inputs.npy"),
                       "backend": origin(manifest.target),
                       "status": str(folder / "status.json"), "outputs": str(folder / "outputs")}
            (folder / "request.json").write_text(json.dumps(request), encoding="utf-8")
            log = open(folder / "log.txt", "wb")  # a file, not a pipe: nobody reads a pipe while the child runs
            try:
                process = subprocess.Popen(
                    [sys.executable, "-m", "shvit_edge.verify_worker", str(folder / "request.json")],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=dict(os.environ, PYTHONUNBUFFERED="1"))
            except BaseException:
                log.close()
                raise
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return cls(folder, process, log)

    def wait(self) -> ChildReport:
        import numpy as np

        returncode = self.process.wait()
        try:
            status = json.loads((self.folder / "status.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            status = {"stage": "starting", "structure": None, "cannot_run_here": None, "runs": [], "error": None}
        outputs = {}
        for run in status.get("runs", []):
            if run.get("output"):
                outputs[run["output"]] = np.load(self.folder / "outputs" / run["output"], allow_pickle=False)
        for name in ((status.get("structure") or {}).get("arrays") or {}).values():
            outputs[name] = np.load(self.folder / "outputs" / name, allow_pickle=False)
        crashed = returncode != 0 or status.get("stage") != DONE
        last_error = _last_error(self.folder / "log.txt", int(status.get("log_offset") or 0)) if crashed else ""
        return ChildReport(status, returncode, outputs, last_error)

    def __enter__(self) -> RuntimeChild:
        return self

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)


if __name__ == "__main__":
    main()
