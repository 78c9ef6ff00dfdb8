"""``shvit-edge results ingest``: results of any harness or benchmark tool into the store, judged on the host.

What it takes, each recognised by its content (no ``--format``):

- a **bundle** (a folder with ``bundle.json``, or its zip): its artifacts' references and tolerances, which the
  runs of that bundle are judged against (runs stored before their bundle are judged when it arrives);
- a **result document** (``result.schema.json`` schema_version 2: the host harness and the device apps): every
  run with its raw latencies (the statistics are computed here) and raw outputs, judged here with verify's
  metrics and tolerances (:func:`judge_output`) against the bundle's references, so no app is trusted to judge
  itself. Outputs of the wrong shape refuse the document; outputs beyond tolerance are stored as a parity
  failure;
- a **bench document** (``shvit-edge bench --json``, schema_version 1): host latencies as bench reported them;
- the outputs of other tools (:mod:`shvit_edge.harness.formats`): ExecuTorch's benchmark apps, XCTest and
  ``xcresulttool``, LiteRT's ``benchmark_model``, coremltools' benchmarker, Qualcomm AI Hub profiles. They carry
  no artifact sha256: such a record is stored untied (``tied`` 0), with what it has.

Everything given is read and checked first; then all of it is stored in one transaction, or, when anything is
refused (a bad file, a bundle that fails its sha256, a path outside a bundle, a document that breaks its
schema), nothing is (exit 2). A document already stored (same sha256) is passed over and said so. A failed
run is stored as a failure.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .._strict import read_capped
from ..errors import InputError
from ..targets import Tolerance
from .bundle import BUNDLE_JSON, open_bundle
from .documents import inside, load_json, safe_relative, validate
from .records import FAILED, HOST_WALL_TIME, IN_APP_WALL_TIME, OK, Record, latency_stats
from .store import Store

#: a document file larger than this is refused before it is read
MAX_DOCUMENT_BYTES = 64 << 20
#: files looked at in one folder given to ingest (recursively)
MAX_FOLDER_FILES = 10_000
BENCH_TOOL = "shvit-edge bench"
PASS, FAIL, UNJUDGED, NONE = "pass", "fail", "unjudged", "none"

Progress = Callable[[str], None]


@dataclass
class Item:
    """One thing read and checked, not yet stored: a bundle or a document with its runs."""

    origin: str
    kind: str                      # bundle / document
    source_tool: str
    sha256: str = ""
    size: int = 0
    bundle_id: str | None = None
    #: a bundle's row and its artifacts' rows
    bundle: dict | None = None
    artifacts: list = field(default_factory=list)
    #: the runs: (Record, outputs array or None, details dict)
    runs: list = field(default_factory=list)


@dataclass(frozen=True)
class Outcome:
    origin: str
    kind: str
    source_tool: str
    stored: int = 0
    already: bool = False
    parity: dict = field(default_factory=dict)
    untied: int = 0
    failed: int = 0

    def as_json(self) -> dict:
        return {"origin": self.origin, "kind": self.kind, "source_tool": self.source_tool, "runs_stored": self.stored,
                "already_stored": self.already, "parity": self.parity, "untied": self.untied, "failed": self.failed}


def ingest(paths, store: Store, progress: Progress | None = None) -> tuple[list[Outcome], list[str]]:
    """Read and check everything in ``paths``, then store it all in one transaction. Returns the outcome per
    item and the files of the folders given that were passed over (not recognised as results)."""
    progress = progress or (lambda message: None)
    items, passed_over = [], []
    for given in paths:
        path = Path(given)
        for file in _expand(path, passed_over):
            progress(f"reading {file} ...")
            items.append(read_item(file))
    return store_items(store, items), passed_over


def ingest_bytes(data: bytes, origin: str, store: Store) -> dict:
    """One posted document (``results listen``): a result or bench document, checked, judged and stored; what was
    stored. Outputs must be inline (a posted document has no folder beside it)."""
    item = read_document(data, origin, base=None)
    return store_items(store, [item])[0].as_json()


def accept_into(db: Path) -> Callable[[bytes, str], dict]:
    """What ``results listen`` hands each posted body to: :func:`ingest_bytes` into the store at ``db``, through a
    connection of its own (the server calls it on its request threads, one at a time)."""
    from .store import open_store

    def accept(body: bytes, origin: str) -> dict:
        store = open_store(db)
        try:
            return ingest_bytes(body, origin, store)
        finally:
            store.close()

    return accept


def _expand(path: Path, passed_over: list[str]) -> list[Path]:
    if path.is_symlink() and path.is_dir():
        raise InputError(f"{path}: a symlinked folder; give the folder itself")
    if path.is_dir():
        if (path / BUNDLE_JSON).exists():
            return [path]
        found = []
        for file in sorted(path.rglob("*")):
            if any(part.startswith(".") for part in file.relative_to(path).parts):
                continue
            if file.is_dir() and (file / BUNDLE_JSON).exists():
                found.append(file)
            elif file.is_file() and not file.is_symlink() and not any(
                    (parent / BUNDLE_JSON).exists() for parent in file.parents if path in parent.parents or
                    parent == path):
                if file.suffix.lower() in (".json", ".txt", ".log", ".pb", ".zip", ".binarypb", ".out") or \
                        file.name in ("benchmark_results.json",):
                    found.append(file)
                else:
                    passed_over.append(str(file))
            if len(found) > MAX_FOLDER_FILES:
                raise InputError(f"{path}: more than {MAX_FOLDER_FILES} files to ingest; give fewer")
        if not found:
            raise InputError(f"{path}: no result files in this folder")
        return found
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    return [path]


def read_item(path: Path) -> Item:
    """A bundle (folder or zip) or a document file, read and checked."""
    import zipfile

    if path.is_dir() or (path.is_file() and path.suffix.lower() == ".zip" and zipfile.is_zipfile(path)):
        return read_bundle_item(path)
    data = read_capped(path, MAX_DOCUMENT_BYTES, "result file")
    return read_document(data, str(path), base=path.parent)


def read_bundle_item(path: Path) -> Item:
    with open_bundle(path) as bundle:
        artifacts = []
        for a in bundle.artifacts:
            reference = np.ascontiguousarray(a.reference(), dtype="<f4")
            e = a.entry
            artifacts.append({"sha256": e["sha256"], "name": e["name"], "target": e["target"], "family": e["family"],
                              "variant": e["variant"], "resolution": json.dumps(e["resolution"]), "batch": e["batch"],
                              "precision": e["precision"], "quantization": e["quantization"],
                              "tolerance": json.dumps(e["tolerance"]), "reference": reference.tobytes(),
                              "reference_shape": json.dumps(list(reference.shape))})
        doc = bundle.doc
    return Item(origin=str(path), kind="bundle", source_tool="shvit-edge bundle", bundle_id=doc["id"],
                bundle={"id": doc["id"], "shvit_edge_version": doc["shvit_edge_version"],
                        "created_at": doc["created_at"]}, artifacts=artifacts)


def read_document(data: bytes, origin: str, base: Path | None) -> Item:
    """A document's bytes (``base``: the folder its output files are in; None: outputs must be inline)."""
    from . import formats

    sha = hashlib.sha256(data).hexdigest()
    stripped = data.lstrip()
    if stripped[:1] == b"{":
        try:
            doc = load_json(data, origin)
        except InputError:
            doc = None
        if isinstance(doc, dict) and "schema_version" in doc:
            version = doc["schema_version"]
            if version not in (1, 2) or isinstance(version, bool):
                raise InputError(f"{origin}: schema_version {version!r} is not one this shvit-edge reads (1: a bench "
                                 "document, 2: a harness result)")
            validate(doc, "bench" if version == 1 else "result", origin, None if version == 1 else "harness_result")
            if version == 1:
                return Item(origin, "document", BENCH_TOOL, sha, len(data), runs=_bench_runs(doc))
            return _result_item(doc, origin, sha, len(data), base)
    kind = formats.detect(data, origin)
    if kind is None:
        raise InputError(f"{origin}: not a result this shvit-edge recognises (a shvit-edge result or bench "
                         f"document, or one of: {', '.join(formats.FORMATS)})")
    records = formats.parse(data, origin)
    return Item(origin, "document", kind, sha, len(data), runs=[(r, None, {}) for r in records])


def _result_item(doc: dict, origin: str, sha: str, size: int, base: Path | None) -> Item:
    device = {k: v for k, v in doc["device"].items()}
    runs = []
    for i, run in enumerate(doc["runs"]):
        where = f"{origin}: runs[{i}]"
        output = _output(run["output"], where, base) if "output" in run else None
        if run["status"] == "ok" and output is None:
            raise InputError(f"{where}: an ok run has no output; a harness returns the raw outputs of every run")
        record = Record(
            source_tool=doc["harness"]["name"], meaning=run.get("meaning", IN_APP_WALL_TIME),
            status=run["status"], error=run.get("error"), model=run["artifact"],
            artifact_sha256=run["artifact_sha256"], runtime=run["runtime"], runtime_version=run.get("runtime_version"),
            setting=run["setting"], device=device, threads=run.get("threads"), load_ms=run.get("load_ms"),
            first_inference_ms=run.get("first_inference_ms"), warmup=run.get("warmup"),
            latencies_ms=tuple(run.get("latencies_ms", ())), peak_memory_mb=run.get("peak_memory_mb"),
            thermal_before=run.get("thermal_before"), thermal_after=run.get("thermal_after"),
            extra={k: run[k] for k in ("precision_flags", "compile_ms", "app_parity") if k in run} |
            {"harness": doc["harness"], "created_at": doc["created_at"]})
        runs.append((record, output, run.get("details") or {}))
    return Item(origin, "document", doc["harness"]["name"], sha, size, bundle_id=doc["bundle"]["id"], runs=runs)


def _output(spec: dict, where: str, base: Path | None) -> np.ndarray:
    shape = spec["shape"]
    expected = int(np.prod(shape, dtype=np.int64)) * 4
    if "base64" in spec:
        try:
            raw = base64.b64decode(spec["base64"], validate=True)
        except ValueError:
            raise InputError(f"{where}.output: base64 is not valid") from None
    else:
        if base is None:
            raise InputError(f"{where}.output names a file; a posted result carries its outputs inline (base64)")
        relative = safe_relative(spec["file"], f"{where}.output.file")
        path = inside(base, relative, f"{where}.output")
        if path.stat().st_size != expected:
            raise InputError(f"{where}.output: {relative} is {path.stat().st_size} bytes; its shape {shape} float32 "
                             f"takes {expected}")
        raw = read_capped(path, expected, "output file")
        if hashlib.sha256(raw).hexdigest() != spec["sha256"]:
            raise InputError(f"{where}.output: {relative} fails its sha256")
    if len(raw) != expected:
        raise InputError(f"{where}.output holds {len(raw)} bytes; its shape {shape} float32 takes {expected}")
    return np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)


def _bench_runs(doc: dict) -> list:
    machine = doc["machine"]
    device = {"model": machine.get("device") or machine.get("machine") or "host", "os": machine.get("platform"),
              "soc": machine.get("processor") or None}
    device = {k: v for k, v in device.items() if v}
    runs = []
    baselines = doc.get("baselines") or ([doc["baseline"]] if doc.get("baseline") else [])
    for result in [*baselines, *doc["results"]]:
        latency = result["latency_ms"]
        record = Record(source_tool=BENCH_TOOL, meaning=HOST_WALL_TIME, model=result["artifact"],
                        target=result["target"], runtime=result["runtime"], device=device, threads=result["threads"],
                        batch=result["batch"], precision=result.get("precision"),
                        quantization=result.get("quantization"), load_ms=result["load_ms"],
                        first_inference_ms=result["first_inference_ms"],
                        warmup=(doc.get("settings") or {}).get("warmup"),
                        latencies_ms=tuple(result.get("latencies_ms", ())),
                        reported_ms={"median": latency["p50"], "p90": latency["p90"], "p99": latency["p99"],
                                     "mean": latency["mean"], "min": latency["min"]},
                        peak_memory_mb=result.get("peak_rss_mb"),
                        extra={k: result[k] for k in ("variant", "resolution", "ratio_to_eager", "verify")
                               if k in result})
        runs.append((record, None, {}))
    for failure in doc.get("failures", []):
        runs.append((Record(source_tool=BENCH_TOOL, meaning=HOST_WALL_TIME, status=FAILED, error=failure["error"],
                            model=failure["artifact"], target=failure["target"], device=device), None, {}))
    for skipped in doc.get("skipped", []):
        runs.append((Record(source_tool=BENCH_TOOL, meaning=HOST_WALL_TIME, status="skipped", error=skipped["reason"],
                            model=skipped["artifact"], target=skipped["target"], device=device), None, {}))
    if not runs:
        raise InputError("a bench document without results, failures or skips holds nothing to store")
    return runs


# -- judging --


def judge_output(output: np.ndarray, reference: np.ndarray, tolerance: Tolerance, details: dict | None = None
                 ) -> tuple[str, str, dict]:
    """(pass/fail, reason, metrics) of ``output`` against ``reference``: verify's metrics, judge and fp16 check."""
    from ..parity.judge import judge
    from ..parity.metrics import compare
    from ..verify import fp16_overflows

    metrics = compare(output, reference)
    problems = judge(metrics, tolerance)
    headroom = (details or {}).get("fp16_headroom")
    if headroom is not None:
        problems += fp16_overflows(headroom)
    reason = "; ".join(problems) if problems else f"within tolerance on {output.shape[0]} inputs"
    return (FAIL if problems else PASS), reason, metrics.as_dict()


# -- storing --


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def store_items(store: Store, items: list[Item]) -> list[Outcome]:
    """Store every item in one transaction (all or nothing)."""
    outcomes = []
    with store.transaction() as db:
        for item in (i for i in items if i.kind == "bundle"):
            outcomes.append(_store_bundle(db, item))
        for item in (i for i in items if i.kind == "document"):
            outcomes.append(_store_document(db, item))
    return outcomes


def _store_bundle(db, item: Item) -> Outcome:
    if db.execute("SELECT 1 FROM bundles WHERE id = ?", (item.bundle_id,)).fetchone():
        return Outcome(item.origin, "bundle", item.source_tool, already=True)
    db.execute("INSERT INTO bundles (id, shvit_edge_version, created_at, origin, ingested_at) VALUES (?, ?, ?, ?, ?)",
               (item.bundle_id, item.bundle["shvit_edge_version"], item.bundle["created_at"], item.origin, _now()))
    for a in item.artifacts:
        db.execute(f"INSERT INTO bundle_artifacts (bundle_id, {', '.join(a)}) VALUES (?{', ?' * len(a)})",
                   (item.bundle_id, *a.values()))
    # runs stored before their bundle arrived are judged now
    parity: dict = {}
    for run_id, sha, output, shape, details in db.execute(
            "SELECT id, artifact_sha256, output, output_shape, extra FROM runs WHERE bundle_id = ? AND "
            "parity_status = ?", (item.bundle_id, UNJUDGED)).fetchall():
        array = np.frombuffer(output, dtype="<f4").reshape(json.loads(shape))
        columns = _judged(db, item.bundle_id, sha, array, json.loads(details or "{}").get("details"), f"run {run_id}",
                          strict=False)
        db.execute(f"UPDATE runs SET {', '.join(f'{k} = ?' for k in columns)} WHERE id = ?",
                   (*columns.values(), run_id))
        parity[columns["parity_status"]] = parity.get(columns["parity_status"], 0) + 1
    return Outcome(item.origin, "bundle", item.source_tool, parity=parity)


def _judged(db, bundle_id: str | None, sha: str | None, output: np.ndarray | None, details: dict | None,
            where: str, strict: bool = True) -> dict:
    """The parity columns of a run (and the bundle artifact's facts when it is tied to one). ``strict`` (a document
    being ingested): a run that names an artifact its bundle lacks, or outputs of another shape than the
    reference's, refuses the document; otherwise (runs stored before their bundle arrived) such a run is stored
    as it is and its parity says why it was not judged or failed."""
    known = bundle_id is not None and db.execute("SELECT 1 FROM bundles WHERE id = ?", (bundle_id,)).fetchone()
    row = None if sha is None else db.execute(
        "SELECT reference, reference_shape, tolerance, family, variant, target, precision, quantization, batch "
        "FROM bundle_artifacts WHERE bundle_id = ? AND sha256 = ?", (bundle_id, sha)).fetchone()
    if known and row is None:
        why = f"its artifact_sha256 is not an artifact of bundle {bundle_id[:12]}"
        if strict:
            raise InputError(f"{where}: {why}")
        return {"parity_status": UNJUDGED if output is not None else NONE, "parity_reason": why, "tied": 0}
    facts = {} if row is None else {"tied": 1, "family": row[3], "variant": row[4], "target": row[5],
                                    "precision": row[6], "quantization": row[7], "batch": row[8]}
    if output is None:
        return {"parity_status": NONE, "tied": 0, **facts}
    if row is None:
        why = (f"the bundle {bundle_id[:12]} is not in the store: ingest it to judge this run" if bundle_id else
               "no bundle named")
        return {"parity_status": UNJUDGED, "parity_reason": why, "tied": 0}
    reference = np.frombuffer(row[0], dtype="<f4").reshape(json.loads(row[1]))
    if output.shape != reference.shape:
        why = (f"its outputs are {list(output.shape)}; the bundle's reference is {list(reference.shape)} (one row "
               "per input of the bundle)")
        if strict:
            raise InputError(f"{where}: {why}")
        return {"parity_status": FAIL, "parity_reason": why, **facts}
    status, reason, metrics = judge_output(output, reference, Tolerance.from_record(json.loads(row[2])), details)
    return {"parity_status": status, "parity_reason": reason, "parity_metrics": json.dumps(metrics),
            "tolerance": row[2], **facts}


def _store_document(db, item: Item) -> Outcome:
    if db.execute("SELECT 1 FROM documents WHERE sha256 = ?", (item.sha256,)).fetchone():
        return Outcome(item.origin, "document", item.source_tool, already=True)
    cursor = db.execute("INSERT INTO documents (sha256, source_tool, origin, size, bundle_id, ingested_at) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (item.sha256, item.source_tool, item.origin, item.size, item.bundle_id, _now()))
    document_id = cursor.lastrowid
    parity: dict = {}
    untied = failed = 0
    for i, (record, output, details) in enumerate(item.runs):
        columns = _record_columns(record)
        judged = _judged(db, item.bundle_id, record.artifact_sha256, output, details, f"{item.origin}: runs[{i}]")
        columns.update({k: v for k, v in judged.items() if v is not None or k not in columns})
        if output is not None:
            columns["output"] = np.ascontiguousarray(output, dtype="<f4").tobytes()
            columns["output_shape"] = json.dumps(list(output.shape))
        if details:
            extra = json.loads(columns["extra"])
            extra["details"] = details
            columns["extra"] = json.dumps(extra)
        columns.update(document_id=document_id, bundle_id=item.bundle_id)
        db.execute(f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                   tuple(columns.values()))
        parity[columns["parity_status"]] = parity.get(columns["parity_status"], 0) + 1
        untied += record.artifact_sha256 is None
        failed += record.status == FAILED
    return Outcome(item.origin, "document", item.source_tool, stored=len(item.runs), parity=parity, untied=untied,
                   failed=failed)


_REPORTED = {"median": "p50", "p50": "p50", "p90": "p90", "p95": "p95", "p99": "p99", "mean": "mean", "min": "min",
             "max": "max", "std": "std", "count": "count"}


def _finite(value):
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def _record_columns(r: Record) -> dict:
    columns = {"source_tool": r.source_tool, "meaning": r.meaning, "status": r.status if r.status else OK,
               "error": r.error, "model": r.model, "artifact_sha256": r.artifact_sha256, "target": r.target,
               "precision": r.precision, "quantization": r.quantization, "batch": r.batch, "runtime": r.runtime,
               "runtime_version": r.runtime_version, "setting": r.setting, "threads": r.threads,
               "device_model": r.device.get("model"), "device_os": r.device.get("os"),
               "device_os_version": r.device.get("os_version"), "device_soc": r.device.get("soc"),
               "device": json.dumps(r.device), "load_ms": _finite(r.load_ms),
               "first_inference_ms": _finite(r.first_inference_ms), "warmup": r.warmup,
               "peak_memory_mb": _finite(r.peak_memory_mb), "thermal_before": r.thermal_before,
               "thermal_after": r.thermal_after, "reported": json.dumps(r.reported_ms) if r.reported_ms else None,
               "extra": json.dumps(r.extra, default=str)}
    stats = latency_stats(r.latencies_ms)
    if stats:
        columns["latencies"] = json.dumps(list(r.latencies_ms))
        columns["stats_from"] = "raw"
        columns.update({k: stats[k] for k in ("p50", "p90", "p95", "p99", "mean", "trimmed_mean", "std", "cv", "min",
                                               "max", "count")})
    elif r.reported_ms:
        columns["stats_from"] = "reported"
        for key, column in _REPORTED.items():
            if key in r.reported_ms and _finite(r.reported_ms[key]) is not None:
                columns[column] = r.reported_ms[key]
    else:
        columns["stats_from"] = "none"
    return columns
