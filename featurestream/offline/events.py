"""Event-log rows as the aggregations see them: the view's udf applied per row, exactly as online.

The stream materializer calls the udf on each decoded event (timestamp as an
aware UTC datetime, absent columns as None) and takes the join keys and the
aggregated columns from what it returns; this does the same over the event
log, a record batch at a time, and adds the event time in ms and an arrival
rank `__seq` (order of event time, partition, offset: what `last` breaks ties by).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import duckdb
import pyarrow as pa

from featurestream.definitions import StreamSourceSpec
from featurestream.offline.engine import ident
from featurestream.offline.errors import OfflineError

TS = "__ts"
SEQ = "__seq"
BATCH_ROWS = 200_000
Udf = Callable[[dict[str, Any]], dict[str, Any]]


def events_table(con: duckdb.DuckDBPyConnection, name: str, source: StreamSourceSpec, log_view: str,
                 udf: Udf | None, columns: Sequence[str], max_t: int) -> None:
    """Create temp table `name` with the events up to `max_t`: `columns` (keys and aggregated ones), TS and SEQ."""
    order = f"{ident(source.timestamp_field)}, _partition, _offset"
    base = (f"SELECT *, epoch_ms({ident(source.timestamp_field)}) AS {TS}, row_number() OVER (ORDER BY {order}) "
            f"AS {SEQ} FROM {ident(log_view)} WHERE epoch_ms({ident(source.timestamp_field)}) <= {max_t}")
    if udf is None:
        missing = [c for c in columns if c not in source.schema]
        if missing:
            raise OfflineError(f"source {source.name!r} has no column {', '.join(missing)}")
        selected = ", ".join(ident(c) for c in columns)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {ident(name)} AS SELECT {selected}, {TS}, {SEQ} FROM ({base})")
        return
    reader = con.sql(base).to_arrow_reader(BATCH_ROWS)
    chunks = [_apply_udf(batch, list(source.schema), udf, columns, source.name) for batch in reader]
    if chunks:
        derived = pa.concat_tables(chunks, promote_options="permissive")
    else:
        derived = pa.table({**{c: pa.array([], pa.null()) for c in columns},
                            TS: pa.array([], pa.int64()), SEQ: pa.array([], pa.int64())})
    derived = pa.table({c: _typed(derived.column(c)) for c in derived.column_names})
    con.register(f"{name}_arrow", derived)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {ident(name)} AS SELECT * FROM {ident(name + '_arrow')}")
    con.unregister(f"{name}_arrow")


def _apply_udf(batch: pa.RecordBatch, schema_columns: list[str], udf: Udf, columns: Sequence[str],
               source_name: str) -> pa.Table:
    """Run the udf on each row of one batch; keep `columns` of its output plus TS and SEQ."""
    values = [batch.column(c).to_pylist() for c in schema_columns]
    try:
        outputs = [udf(dict(zip(schema_columns, row))) for row in zip(*values)]
    except Exception as exc:  # the user's code: name it; the materializer dead-letters such events instead
        raise OfflineError(f"the udf of source {source_name!r} failed on an event-log row: "
                           f"{type(exc).__name__}: {exc}") from exc
    try:
        derived = {c: pa.array([out[c] for out in outputs]) for c in columns}
    except KeyError as exc:
        raise OfflineError(f"the udf of source {source_name!r} returned no column {exc.args[0]!r}") from None
    return pa.table({**derived, TS: batch.column(TS), SEQ: batch.column(SEQ)})


def _typed(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """An all-null column gets a concrete type so DuckDB can aggregate it (to nothing)."""
    return column.cast(pa.float64()) if pa.types.is_null(column.type) else column
