"""The DuckDB connection and the views it exposes: batch sources, the event log, the entity table.

Everything is a view over files, so DuckDB streams them and spills joins and
sorts to disk past its memory limit: memory stays bounded whatever the size
of the inputs.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import duckdb

from featurestream.definitions import BatchViewSpec
from featurestream.offline.errors import OfflineError

# DuckDB column types of the KafkaSource schema kinds (the event log's columns).
SQL_TYPES = {"string": "VARCHAR", "bigint": "BIGINT", "double": "DOUBLE", "boolean": "BOOLEAN",
             "timestamp": "TIMESTAMPTZ"}


DEFAULT_MEMORY_LIMIT = "4GB"


def connect(memory_limit: str | None = None, temp_dir: Path | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB in UTC that spills to `temp_dir` past its memory limit.

    The limit (FEATURESTREAM_DUCKDB_MEMORY, default 4GB) is what keeps a 10M-row export's memory
    bounded: DuckDB's own default, most of the machine's RAM, would rather hold everything.
    """
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    limit = memory_limit or os.environ.get("FEATURESTREAM_DUCKDB_MEMORY") or DEFAULT_MEMORY_LIMIT
    con.execute(f"SET memory_limit = {quote(limit)}")
    spill = temp_dir or Path(tempfile.gettempdir()) / "featurestream-duckdb"
    con.execute(f"SET temp_directory = {quote(str(spill))}")
    con.execute("SET preserve_insertion_order = false")
    return con


def quote(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def ident(name: str) -> str:
    """A SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def file_scan(path: str) -> str:
    """The DuckDB table function reading a Parquet or CSV file, directory or glob."""
    target = Path(path)
    if target.is_dir():
        return f"read_parquet({quote(str(target / '**' / '*.parquet'))}, union_by_name = true)"
    if not any(ch in path for ch in "*?[") and not target.exists():
        raise OfflineError(f"{path} does not exist")
    if target.suffix.lower() in (".csv", ".tsv") or path.lower().endswith((".csv.gz", ".tsv.gz")):
        return f"read_csv({quote(path)})"
    return f"read_parquet({quote(path)}, union_by_name = true)"


def register_batch_source(con: duckdb.DuckDBPyConnection, view: BatchViewSpec) -> str:
    """A view over the batch view's source, named after it; a `file.duckdb:table` path reads a DuckDB table."""
    name = f"src_{view.name}"
    database, sep, table = view.source_path.partition(".duckdb:")
    if sep:
        alias = f"db_{view.name}"
        con.execute(f"ATTACH IF NOT EXISTS {quote(database + '.duckdb')} AS {ident(alias)} (READ_ONLY)")
        scan = f"{ident(alias)}.{ident(table)}"
    else:
        scan = file_scan(view.source_path)
    try:
        con.execute(f"CREATE OR REPLACE TEMP VIEW {ident(name)} AS SELECT * FROM {scan}")
        columns = {row[0] for row in con.execute(f"DESCRIBE {ident(name)}").fetchall()}
    except duckdb.Error as exc:
        raise OfflineError(f"cannot read the source of feature view {view.name!r} ({view.source_path}): {exc}") from None
    needed = [*view.join_keys, view.timestamp_field, *view.feature_names]
    if view.created_timestamp_column:
        needed.append(view.created_timestamp_column)
    missing = [c for c in needed if c not in columns]
    if missing:
        raise OfflineError(f"the source of feature view {view.name!r} ({view.source_path}) has no column "
                           f"{', '.join(missing)}")
    return name
