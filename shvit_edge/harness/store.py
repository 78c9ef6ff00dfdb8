"""The results store: one SQLite file that holds every ingested run, the bundles they are judged against, and
the documents they came from.

The schema is versioned by SQLite's ``user_version``: :data:`MIGRATIONS` lists each version's statements, and
:func:`open_store` applies the ones a file lacks, each in a transaction, in order. A file from a newer
shvit-edge (a version this one does not know) is refused rather than misread. The default file lives in the
user's data directory (``platformdirs``), or where ``SHVIT_EDGE_RESULTS_DB`` says; ``--db PATH`` chooses.

Writes go through :meth:`Store.transaction`: an ingest stores all it was given or nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Iterator

from ..errors import InputError, UsageError

#: (version, statements): version N's statements bring a version N-1 store to N
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (1, """
CREATE TABLE documents (
    id INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,         -- of the document's bytes: the same file is stored once
    source_tool TEXT NOT NULL,
    origin TEXT NOT NULL,                -- the file it was read from, or listen:<address>
    size INTEGER NOT NULL,
    bundle_id TEXT,
    ingested_at TEXT NOT NULL
);
CREATE TABLE bundles (
    id TEXT PRIMARY KEY,
    shvit_edge_version TEXT,
    created_at TEXT,
    origin TEXT NOT NULL,
    ingested_at TEXT NOT NULL
);
CREATE TABLE bundle_artifacts (
    bundle_id TEXT NOT NULL REFERENCES bundles(id),
    sha256 TEXT NOT NULL,
    name TEXT NOT NULL,
    target TEXT, family TEXT, variant TEXT, resolution TEXT, batch INTEGER, precision TEXT, quantization TEXT,
    tolerance TEXT NOT NULL,             -- JSON: verify's tolerance record (class, fields, source)
    reference BLOB NOT NULL,             -- float32 little-endian, reference_shape
    reference_shape TEXT NOT NULL,
    PRIMARY KEY (bundle_id, sha256)
);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    document_id INTEGER NOT NULL REFERENCES documents(id),
    source_tool TEXT NOT NULL,
    meaning TEXT NOT NULL,               -- in-app wall time / hosted estimate / host wall time / interpreter
    status TEXT NOT NULL,                -- ok / failed / skipped
    error TEXT,
    model TEXT,
    artifact_sha256 TEXT,
    tied INTEGER NOT NULL,               -- 1: artifact_sha256 is an artifact of a bundle in this store
    bundle_id TEXT,
    family TEXT, variant TEXT, target TEXT, precision TEXT, quantization TEXT, batch INTEGER,
    runtime TEXT, runtime_version TEXT, setting TEXT, threads INTEGER,
    device_model TEXT, device_os TEXT, device_os_version TEXT, device_soc TEXT,
    device TEXT,                         -- JSON, all the source said of the device
    load_ms REAL, first_inference_ms REAL, warmup INTEGER,
    latencies TEXT,                      -- JSON list of every timed inference (ms), when the source gives them
    stats_from TEXT,                     -- raw (computed here from latencies) / reported (the source's own) / none
    p50 REAL, p90 REAL, p95 REAL, p99 REAL, mean REAL, trimmed_mean REAL, std REAL, cv REAL,
    min REAL, max REAL, count INTEGER,
    reported TEXT,                       -- JSON: the statistics the source computed itself
    peak_memory_mb REAL, thermal_before TEXT, thermal_after TEXT,
    output BLOB, output_shape TEXT,      -- raw outputs (float32 little-endian) of a harness run
    parity_status TEXT NOT NULL,         -- pass / fail / unjudged (outputs, no reference yet) / none (no outputs)
    parity_reason TEXT,
    parity_metrics TEXT,                 -- JSON: verify's metrics
    tolerance TEXT,                      -- JSON: the tolerance judged by
    extra TEXT                           -- JSON: everything else the source said
);
CREATE INDEX runs_artifact ON runs(artifact_sha256);
CREATE INDEX runs_bundle ON runs(bundle_id);
"""),
)
LATEST = MIGRATIONS[-1][0]
DB_ENV = "SHVIT_EDGE_RESULTS_DB"


def default_path() -> Path:
    """Where the store lives unless ``--db`` says otherwise."""
    if os.environ.get(DB_ENV):
        return Path(os.environ[DB_ENV])
    import platformdirs

    return Path(platformdirs.user_data_dir("shvit-edge")) / "results.sqlite"


class Store:
    def __init__(self, connection: sqlite3.Connection, path: Path):
        self.db, self.path = connection, path

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Everything inside is stored, or (an exception, an interrupt) nothing."""
        with _transaction(self.db):
            yield self.db

    def version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def runs(self, **filters) -> list[dict]:
        """Every run, newest document first, as dicts (JSON columns decoded); ``filters``: column=value, or
        ``device`` matching any of the device columns (substring), ``runtime`` a substring."""
        where, args = [], []
        for column, value in filters.items():
            if value is None:
                continue
            if column == "device":
                where.append("(device_model LIKE ? OR device_soc LIKE ? OR device_os LIKE ?)")
                args += [f"%{value}%"] * 3
            elif column == "runtime":
                where.append("(runtime LIKE ? OR setting LIKE ?)")
                args += [f"%{value}%"] * 2
            elif column in ("variant", "target", "id", "status", "parity_status", "source_tool", "bundle_id"):
                where.append(f"{column} = ?")
                args.append(value)
            else:
                raise UsageError(f"unknown filter {column}")
        sql = "SELECT runs.*, documents.origin AS origin, documents.ingested_at AS ingested_at FROM runs " \
              "JOIN documents ON documents.id = runs.document_id"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY runs.id"
        cursor = self.db.execute(sql, args)
        names = [d[0] for d in cursor.description]
        return [_decoded(dict(zip(names, row, strict=True))) for row in cursor.fetchall()]

    def close(self) -> None:
        self.db.close()


_JSON_COLUMNS = ("device", "latencies", "reported", "parity_metrics", "tolerance", "extra", "output_shape")


def _decoded(row: dict) -> dict:
    for column in _JSON_COLUMNS:
        if row.get(column) is not None:
            row[column] = json.loads(row[column])
    row.pop("output", None)
    return row


@contextlib.contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def open_store(path: Path | None = None, create: bool = True) -> Store:
    """The store at ``path`` (default :func:`default_path`), created and brought to :data:`LATEST` as needed."""
    path = Path(path) if path is not None else default_path()
    if path.exists() and not path.is_file():
        raise InputError(f"{path}: the results store is not a regular file")
    if not path.exists():
        if not create:
            raise InputError(f"{path}: no results store here (ingest something first)")
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        connection = sqlite3.connect(str(path), timeout=30, isolation_level=None)  # transactions are explicit
        connection.execute("PRAGMA foreign_keys = ON")
        version = connection.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise InputError(f"{path}: not a results store (SQLite says: {exc})") from None
    if version > LATEST:
        connection.close()
        raise InputError(f"{path}: the results store is version {version}, made by a newer shvit-edge (this one "
                         f"knows up to {LATEST}); upgrade shvit-edge")
    if version == 0 and connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        connection.close()
        raise InputError(f"{path}: an SQLite file that is not a shvit-edge results store")
    for number, statements in MIGRATIONS:
        if number > version:
            try:
                with _transaction(connection):
                    for statement in statements.split(";"):
                        if statement.strip():
                            connection.execute(statement)
                    connection.execute(f"PRAGMA user_version = {number}")
            except sqlite3.DatabaseError as exc:
                connection.close()
                raise InputError(f"{path}: could not bring the results store to version {number} ({exc})") from None
    return Store(connection, path)
