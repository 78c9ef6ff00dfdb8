"""Mutation score of the code that decides whether an artifact passes (issue 13): ``shvit_edge/parity/``, verify's
judging functions, ``shvit_edge/models/reparam.py``, ``shvit_edge/atomic.py`` and ``shvit_edge/_strict.py``,
against the fast unit tests that cover them. Not part of CI.

mutmut (``pip install -c constraints.txt -e '.[mutation]'``) runs in a scratch copy of the project (it writes a
``mutants/`` folder beside the sources; the working tree is left alone). In ``shvit_edge/verify.py`` and
``shvit_edge/parity/run.py`` (where two of them now live, beside verify's batching) only the functions in
:data:`VERIFY_JUDGING` are mutated (the others are marked ``# pragma: no mutate block`` in the copy). The score
is killed / all mutants, per module and overall; a mutant no selected test reaches counts as surviving.
Survivors are listed with file, line and the change; those in :data:`EQUIVALENT` (mutants that cannot change
behaviour) are listed as such with the reason, and counted apart. Results go to benchmarks/results/mutation.json.

    .venv/bin/python benchmarks/mutation.py [--max-children 1] [--keep DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import ast
import datetime
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
MUTMUT = [sys.executable, "-m", "mutmut"]

#: the modules mutated (verify.py: only its judging functions)
MODULES = ("shvit_edge/parity/*.py", "shvit_edge/verify.py", "shvit_edge/models/reparam.py",
           "shvit_edge/atomic.py", "shvit_edge/_strict.py")
#: verify's judging functions (``judge`` in parity/judge.py, ``_masked`` and ``input_mismatch`` in parity/run.py)
VERIFY_JUDGING = ("VerifyResult", "_finite", "check_options", "judge", "_masked", "input_mismatch", "_softmax")
#: the modules holding verify's functions, where only those in :data:`VERIFY_JUDGING` are mutated
PARTLY_MUTATED = ("shvit_edge/verify.py", "shvit_edge/parity/run.py")
#: the tests that cover them and take seconds, not minutes (each mutant runs only the tests that reach it)
TESTS = ("tests/test_judge.py", "tests/test_mutation_kills.py", "tests/test_atomic.py", "tests/test_readers.py",
         "tests/test_readers_props.py")
#: left out: minutes each (exports in a child process, hypothesis runs of whole readers)
DESELECT = ("test_cli_", "test_killing_a_parallel_export", "test_killing_an_export_midway",
            "test_the_profile_loader_reads_or_refuses_cleanly", "test_the_manifest_reader_reads_or_refuses_cleanly")
#: how often a run whose fork server crashed is resumed
RESUMES = 2
#: mutants that cannot change behaviour, by mutmut's name: the reason (listed, not counted as surviving)
_RESHAPE = "numpy's reshape infers a dimension given as any negative number, -2 as -1"
_UTF8 = "codec names are case-insensitive: 'UTF-8' is 'utf-8'"
_BIG = "int.to_bytes's byteorder defaults to 'big' (Python 3.11+, which shvit-edge's torch needs)"
_WALK = ("os.walk's followlinks defaults to False (None is as false); with True, a symlinked folder is still "
         "refused when its parent is listed, before the walk could enter it")
_CHUNK = "the read size of a hash's chunks changes memory, not the digest"
_OLD = "the tag of the transient temporary an overwritten folder is moved to: any tag is a temporary name, removed"
_UNREACHABLE = "unreachable: the checks before it refuse every name for which folder / name is not a plain child"
_SOFTMAX = "verify takes the softmax of (samples, classes) references only: axis +1 is axis -1 in 2-D"
_PROMOTED = "the reference is always float64, so numpy computes every metric of the output in float64 anyway"
_ARGSORT = "np.argsort's default axis is the last: axis 1 of the (samples, -1) arrays"
_ZIP = "zip's strict only checks lengths, equal by construction (both top-k arrays have one row per sample)"
_ZIP_TUPLE = "zip's strict only checks lengths, checked equal just before"
_JOIN = "unreachable: every caller passes a non-empty ``where``"
EQUIVALENT: dict[str, str] = {
    "shvit_edge.parity.metrics.x_compare__mutmut_23": _RESHAPE,
    "shvit_edge.parity.metrics.x_compare__mutmut_30": _RESHAPE,
    "shvit_edge.parity.metrics.x_constancy__mutmut_18": _RESHAPE,
    "shvit_edge.parity.metrics.x_compare__mutmut_35": "float('NAN') is float('nan')",
    "shvit_edge.parity.metrics.x_compare__mutmut_93": "float('INF') is float('inf')",
    "shvit_edge._strict.x__is_unicode__mutmut_3": _UTF8,
    "shvit_edge.atomic.x_sha256_of__mutmut_8": _UTF8,
    "shvit_edge.atomic.x_sha256_of__mutmut_15": _BIG,
    "shvit_edge.atomic.x_sha256_of__mutmut_22": _BIG,
    "shvit_edge.atomic.x__folder_files__mutmut_3": _WALK,
    "shvit_edge.atomic.x__folder_files__mutmut_5": _WALK,
    "shvit_edge.atomic.x__folder_files__mutmut_6": _WALK,
    "shvit_edge.atomic.x__update_with_file__mutmut_12": _CHUNK,
    "shvit_edge.atomic.x__update_with_file__mutmut_14": _CHUNK,
    "shvit_edge.atomic.x__update_with_file__mutmut_15": _CHUNK,
    "shvit_edge.atomic.x_publish__mutmut_8": _OLD,
    "shvit_edge.atomic.x_publish__mutmut_11": _OLD,
    "shvit_edge.atomic.x_publish__mutmut_12": _OLD,
    "shvit_edge.atomic.x__namespace_id__mutmut_15": ("what stands for an unreadable /proc entry: any constant keeps "
                                                     "the id stable for the host and namespace"),
    "shvit_edge.atomic.x_child_path__mutmut_45": _UNREACHABLE,
    "shvit_edge.atomic.x_child_path__mutmut_49": _UNREACHABLE,
    "shvit_edge.parity.metrics.x_compare__mutmut_3": _PROMOTED,
    "shvit_edge.parity.metrics.x_compare__mutmut_5": _PROMOTED,
    "shvit_edge.parity.metrics.x_compare__mutmut_123": _ARGSORT,
    "shvit_edge.parity.metrics.x_compare__mutmut_130": _ARGSORT,
    "shvit_edge.parity.metrics.x_compare__mutmut_139": _ZIP,
    "shvit_edge.parity.metrics.x_compare__mutmut_142": _ZIP,
    "shvit_edge.parity.metrics.x_compare__mutmut_143": _ZIP,
    "shvit_edge._strict.x_decode_text__mutmut_11": _UTF8,
    "shvit_edge._strict.x__join__mutmut_2": _JOIN,
    "shvit_edge._strict.x__join__mutmut_4": _JOIN,
    "shvit_edge._strict.x__value__mutmut_58": _ZIP_TUPLE,
    "shvit_edge._strict.x__value__mutmut_61": _ZIP_TUPLE,
    "shvit_edge._strict.x__value__mutmut_62": _ZIP_TUPLE,
    "shvit_edge.atomic.x_remove_stale_temporaries__mutmut_20": ("> against >= on a float age in seconds: equal only "
                                                                "at one instant no test can hit"),
    "shvit_edge.verify.x__softmax__mutmut_8": _SOFTMAX,
    "shvit_edge.verify.x__softmax__mutmut_16": _SOFTMAX,
}


def prepare(workspace: Path) -> Path:
    """A copy of the project to mutate in, with its mutmut configuration; returns the copy's root."""
    work = workspace / "work"
    work.mkdir()
    shutil.copytree(ROOT / "shvit_edge", work / "shvit_edge", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "targets", work / "targets")
    (work / "tests").mkdir()
    for name in ("conftest.py", *(Path(t).name for t in TESTS)):
        if (ROOT / "tests" / name).exists():
            shutil.copy2(ROOT / "tests" / name, work / "tests" / name)
    # the fixtures sit beside the project (conftest: ROOT.parent / "shared"), for the copy and for mutmut's copy
    for where in (workspace, work):
        (where / "shared").symlink_to(SHARED)
    for module in PARTLY_MUTATED:
        mark_unjudged(work / module)
    deselect = " and ".join(f"not {name}" for name in DESELECT)
    config = {
        "source_paths": ["shvit_edge"],
        "only_mutate": list(MODULES),
        "pytest_add_cli_args": ["-p", "no:xdist", "-p", "no:cacheprovider", "-q", "-k", deselect],
        "pytest_add_cli_args_test_selection": [t for t in TESTS if (ROOT / t).exists()],
        "also_copy": ["targets"],
        "process_isolation": "forkserver",  # torch is not fork-safe
    }
    lines = ["[tool.mutmut]"] + [f"{k} = {json.dumps(v)}" for k, v in config.items()]
    lines += ["", "[tool.pytest.ini_options]", 'testpaths = ["tests"]']
    (work / "pyproject.toml").write_text("\n".join(lines) + "\n")
    return work


def mark_unjudged(path: Path) -> None:
    """Mark every top-level function and class of ``path`` (verify.py, parity/run.py) but the judging ones
    ``no mutate``."""
    lines = path.read_text().splitlines()
    for node in ast.parse("\n".join(lines)).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name not in VERIFY_JUDGING:
            header = node.body[0].lineno - 2  # the line holding the header's colon
            while not lines[header].rstrip().endswith(":"):
                header -= 1
            lines[header] += "  # pragma: no mutate block"
    path.write_text("\n".join(lines) + "\n")


def mutant_file(name: str) -> str:
    """``shvit_edge.atomic.x_publish__mutmut_3`` -> ``shvit_edge/atomic.py``."""
    module = name.split(".x")[0].split(".xǁ")[0]
    return module.replace(".", "/") + ".py"


def describe(work: Path, name: str) -> dict:
    """Line and change of a mutant, from ``mutmut show``."""
    diff = subprocess.run([*MUTMUT, "show", name], cwd=work, capture_output=True, text=True).stdout
    line, removed, added = None, [], []
    for text in diff.splitlines():
        hunk = re.match(r"@@ -(\d+)", text)
        if hunk:
            line = int(hunk.group(1))
        elif text.startswith("-") and not text.startswith("---"):
            removed.append(text[1:].strip())
        elif text.startswith("+") and not text.startswith("+++"):
            added.append(text[1:].strip())
    for i, text in enumerate(diff.splitlines()):  # the hunk's first changed line
        if text.startswith("@@"):
            context = 0
            for following in diff.splitlines()[i + 1:]:
                if following.startswith(("-", "+")):
                    break
                context += 1
            line = (line or 0) + context
            break
    return {"mutant": name, "line": (line or 1) - 1 + def_line(name), "from": " / ".join(removed),
            "to": " / ".join(added)}


def def_line(name: str) -> int:
    """The line of the function a mutant is in, in the original source (``mutmut show`` numbers from it)."""
    mangled = name.rsplit("__mutmut_", 1)[0].split(".")[-1]
    parts = [x for x in mangled[1:].split("ǁ") if x] if mangled.startswith("xǁ") else [mangled[2:]]
    tree = ast.parse((ROOT / mutant_file(name)).read_text())
    nodes = tree.body
    found = None
    for part in parts:
        found = next(n for n in nodes if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part)
        nodes = found.body
    return min([found.lineno] + [d.lineno for d in getattr(found, "decorator_list", [])])


def collect(work: Path) -> dict[str, dict[str, str]]:
    """{file: {mutant: status}} from mutmut's records."""
    sys.path.insert(0, str(work))
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.stats import status_by_exit_code

    found: dict[str, dict[str, str]] = {}
    cwd = os.getcwd()
    os.chdir(work)
    try:
        for meta in sorted(Path("mutants").rglob("*.py.meta")):
            source = meta.relative_to("mutants").with_suffix("")
            data = SourceFileMutationData(path=source)
            data.load()
            found[str(source)] = {k: status_by_exit_code[v] for k, v in data.exit_code_by_key.items()}
    finally:
        os.chdir(cwd)
    return found


#: what counts as killed: a test failed, timed out, crashed, or (a mutant of the signal handling in atomic.py) the
#: test run stopped with KeyboardInterrupt, which mutmut reports as "check was interrupted by user"
KILLED = ("killed", "timeout", "caught by type check", "segfault", "check was interrupted by user")


def score(statuses: list[str]) -> dict:
    killed = sum(s in KILLED for s in statuses)
    counts = {s: statuses.count(s) for s in sorted(set(statuses))}
    total = len(statuses)
    return {"mutants": total, "killed": killed, "score": round(killed / total, 4) if total else None,
            "statuses": counts}


def run(workspace: Path, work: Path, max_children: int) -> float:
    """``mutmut run`` in ``work``; returns its seconds (also kept in the workspace's run.json)."""
    start = time.perf_counter()
    # one thread per test process: OpenMP threads spinning against each other made forward passes 10x slower
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log = ""
    for _ in range(RESUMES + 1):  # a crashed fork server loses its in-flight mutants; mutmut resumes the rest
        proc = subprocess.run([*MUTMUT, "run", "--max-children", str(max_children)], cwd=work, env=env,
                              capture_output=True, text=True)
        log += proc.stdout + "\n--- stderr ---\n" + proc.stderr
        if proc.returncode == 0 or "ForkServerCrashError" not in proc.stderr:
            break
    seconds = round(time.perf_counter() - start, 1)
    (workspace / "mutmut-run.log").write_text(log)
    (workspace / "run.json").write_text(json.dumps({"seconds": seconds}))
    if proc.returncode != 0:
        raise SystemExit(f"mutmut run failed ({proc.returncode}); see {workspace / 'mutmut-run.log'}:\n"
                         f"{proc.stderr[-3000:]}")
    return seconds


def recheck(workspace: Path, max_children: int) -> None:
    """Test a kept run's surviving mutants again with the tests as they are now (the others stay killed: adding
    tests cannot revive them). Records which mutants were re-tested in the workspace's run.json."""
    work = workspace / "work"
    for test in (*(t for t in TESTS if (ROOT / t).exists()), "tests/conftest.py"):
        for where in (work, work / "mutants"):
            shutil.copy2(ROOT / test, where / test)
    survivors = [name for mutants in collect(work).values() for name, status in mutants.items()
                 if status not in KILLED]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.run([*MUTMUT, "run", "--max-children", str(max_children), *survivors], cwd=work, env=env,
                          capture_output=True, text=True)
    (workspace / "mutmut-recheck.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"mutmut run failed ({proc.returncode}); see {workspace / 'mutmut-recheck.log'}")
    record = json.loads((workspace / "run.json").read_text())
    record.setdefault("rechecks", []).append({"mutants": len(survivors),
                                              "seconds": round(time.perf_counter() - start, 1)})
    (workspace / "run.json").write_text(json.dumps(record))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-children", type=int, default=1, help="mutants tested at once (default 1)")
    parser.add_argument("--keep", help="run in this folder and keep it (default: a temporary folder)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "mutation.json"))
    parser.add_argument("--collect", metavar="DIR", help="only score the run kept in DIR (after editing EQUIVALENT)")
    parser.add_argument("--recheck", metavar="DIR", help="copy the current tests into the run kept in DIR, test its "
                        "surviving mutants again, and score it")
    args = parser.parse_args()
    if args.recheck:
        recheck(Path(args.recheck).resolve(), args.max_children)
        args.collect = args.recheck
    if args.collect:
        workspace = Path(args.collect).resolve()
        work = workspace / "work"
        record = json.loads((workspace / "run.json").read_text())
        seconds, rechecks = record["seconds"], record.get("rechecks", [])
    elif args.keep:
        workspace = Path(args.keep).resolve()
        workspace.mkdir(parents=True, exist_ok=False)
    else:
        workspace = Path(tempfile.mkdtemp(prefix="shvit-edge-mutation-"))
    if not args.collect:
        rechecks = []
    try:
        if not args.collect:
            work = prepare(workspace)
            seconds = run(workspace, work, args.max_children)
        per_module, survivors, equivalent, everything = {}, [], [], []
        for source, mutants in collect(work).items():
            if not mutants:
                continue
            kept = {k: s for k, s in mutants.items() if k not in EQUIVALENT}
            per_module[source] = score(list(kept.values()))
            per_module[source]["equivalent"] = len(mutants) - len(kept)
            everything += kept.values()
            for name, status in sorted(mutants.items()):
                if status not in KILLED:
                    entry = {"file": source, **describe(work, name), "status": status}
                    if name in EQUIVALENT:
                        equivalent.append({**entry, "why": EQUIVALENT[name]})
                    else:
                        survivors.append(entry)
    finally:
        if not args.keep and not args.collect:
            shutil.rmtree(workspace, ignore_errors=True)
    result = {
        "command": "python benchmarks/mutation.py " + " ".join(sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "versions": {"python": platform.python_version(), "mutmut": importlib.metadata.version("mutmut"),
                     "pytest": importlib.metadata.version("pytest")},
        "what": {"modules": list(MODULES), "verify_functions": list(VERIFY_JUDGING), "tests": list(TESTS),
                 "deselected": list(DESELECT),
                 "score": "killed / mutants, equivalent mutants left out; killed: " + ", ".join(KILLED) +
                          "; a mutant no selected test reaches counts as surviving"},
        "seconds": seconds,
        #: survivors of the run tested again after tests were added (--recheck): how many, how long
        "rechecks": rechecks,
        "overall": score(everything),
        "per_module": per_module,
        "survivors": survivors,
        "equivalent": equivalent,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"overall": result["overall"], "per_module": {k: v["score"] for k, v in per_module.items()},
                      "survivors": len(survivors), "seconds": result["seconds"]}, indent=2))


if __name__ == "__main__":
    main()
