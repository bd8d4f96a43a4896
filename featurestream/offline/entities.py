"""The entity table (join keys plus a timestamp per training row) as a DuckDB table with a row number."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from featurestream.offline.engine import file_scan, ident
from featurestream.offline.errors import OfflineError

ENTITY_TABLE = "entity_rows"
ROW = "__row"  # position in the input, so the output keeps its order
T = "__t"      # the row's time in epoch milliseconds
DEFAULT_TIMESTAMP = "event_timestamp"
_TIME_TYPES = ("TIMESTAMP", "DATE")


@dataclass(frozen=True)
class EntityTable:
    columns: tuple[str, ...]      # the input's columns, in order
    timestamp_column: str
    rows: int
    min_t: int | None
    max_t: int | None


EntitySource = str | Path | pa.Table | Any  # a path, an Arrow table or a pandas DataFrame


def register_entities(con: duckdb.DuckDBPyConnection, source: EntitySource, needed_keys: set[str],
                      timestamp_column: str | None = None) -> EntityTable:
    """Load the entity rows; raises OfflineError naming a missing key or timestamp column, or an unreadable file."""
    try:
        if isinstance(source, (str, Path)):
            con.execute(f"CREATE OR REPLACE TEMP VIEW entity_input AS SELECT * FROM {file_scan(str(source))}")
        else:
            con.register("entity_input_frame", source)
            con.execute("CREATE OR REPLACE TEMP VIEW entity_input AS SELECT * FROM entity_input_frame")
        described = con.execute("DESCRIBE entity_input").fetchall()
    except duckdb.Error as exc:
        raise OfflineError(f"cannot read the entity rows from {_label(source)}: {exc}") from None
    types = {row[0]: str(row[1]) for row in described}
    missing = sorted(needed_keys - types.keys())
    if missing:
        raise OfflineError(f"the entity rows have no column {', '.join(missing)} (join key of a requested view); "
                           f"they have {', '.join(types)}")
    ts = _timestamp_column(types, timestamp_column)
    as_time = ident(ts) if types[ts].startswith(_TIME_TYPES) else f"CAST({ident(ts)} AS TIMESTAMPTZ)"
    try:
        # Row numbers in input order: the scan must keep it, whatever the connection's setting.
        con.execute("SET preserve_insertion_order = true")
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {ENTITY_TABLE} AS
            SELECT *, (row_number() OVER ()) - 1 AS {ROW}, epoch_ms({as_time}) AS {T} FROM entity_input""")
    except duckdb.Error as exc:
        raise OfflineError(f"the entity rows' timestamp column {ts!r} does not read as timestamps: {exc}") from None
    finally:
        con.execute("SET preserve_insertion_order = false")
    rows, with_time, lo, hi = con.execute(
        f"SELECT count(*), count({T}), min({T}), max({T}) FROM {ENTITY_TABLE}").fetchall()[0]
    if with_time < rows:
        raise OfflineError(f"{rows - with_time} entity rows have no timestamp in column {ts!r}")
    return EntityTable(tuple(types), ts, rows, lo, hi)


def _timestamp_column(types: dict[str, str], asked: str | None) -> str:
    """The asked column, else `event_timestamp`, else the only timestamp-typed column (as Feast infers it)."""
    if asked is not None:
        if asked not in types:
            raise OfflineError(f"the entity rows have no timestamp column {asked!r}; they have {', '.join(types)}")
        return asked
    if DEFAULT_TIMESTAMP in types:
        return DEFAULT_TIMESTAMP
    stamps = [name for name, kind in types.items() if kind.startswith(_TIME_TYPES)]
    if len(stamps) != 1:
        raise OfflineError("the entity rows need a timestamp column: name it event_timestamp or pass its name "
                           f"(columns: {', '.join(types)})")
    return stamps[0]


def _label(source: EntitySource) -> str:
    return str(source) if isinstance(source, (str, Path)) else type(source).__name__
