"""Point-in-time lookup of batch views by binary search over their rows, sorted once.

A training row at t sees the view's newest row with `row_ts <= t` (ties broken
by the created timestamp, newest first, as Feast does) and only while it is
within the ttl, `row_ts >= t - ttl` like Feast's `get_historical_features`.
The rows of the requested entities are sorted by (entity id, row_ts,
created_ts), so the row a training row sees is the last one at or before its
(entity id, t): one `searchsorted`, where DuckDB's ASOF join sorted both sides
again for every view (the slowest step of a batch export).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa

from featurestream.definitions import BatchViewSpec
from featurestream.offline.engine import ident
from featurestream.offline.frames import KID, Rows, ints, positions

_TS = "__ts"


@dataclass(frozen=True)
class BatchRows:
    """A batch view's rows of the training rows' entities, in (entity id, row_ts, created_ts) order."""

    view: BatchViewSpec
    kid: np.ndarray
    ts: np.ndarray
    values: pa.Table  # the wanted features, same order


def load_batch_rows(con: duckdb.DuckDBPyConnection, view: BatchViewSpec, source: str, numbered: str,
                    features: Sequence[str], min_t: int, max_t: int) -> BatchRows:
    """Rows of the entities numbered in table `numbered` that some training row in [min_t, max_t] may see.

    A row newer than every training row, or older than every row's ttl, is never read, so DuckDB
    filters it in the scan and the sort stays small.
    """
    keys = ", ".join(ident(k) for k in view.join_keys)
    ts = f"epoch_ms({ident(view.timestamp_field)})"
    created = (f"coalesce(epoch_ms({ident(view.created_timestamp_column)}), {np.iinfo(np.int64).min})"
               if view.created_timestamp_column else "0")
    oldest = f"{ts} >= {min_t - view.ttl_ms} AND " if view.ttl_ms else ""
    wanted = "".join(f", {ident(f)}" for f in features)
    table = con.sql(f"""SELECT k.{KID}, {ts} AS {_TS}{wanted}
        FROM {ident(source)} JOIN {ident(numbered)} k USING ({keys})
        WHERE {oldest}{ts} <= {max_t} ORDER BY k.{KID}, {_TS}, {created}""").to_arrow_table()
    values = pa.table({f: _compact(table[f]) for f in features})
    return BatchRows(view, ints(table[KID]), ints(table[_TS]), values)


def batch_features(batch: BatchRows, rows: Rows) -> dict[str, pa.Array]:
    """Per training row, in the chunk's order, each wanted feature of the row it sees (null when none is in reach).

    Rows and batch rows are both sorted by entity, so the rows seen come in ascending order: the
    gather reads forward, and only the reordering into the chunk's order writes at random.
    """
    seen = positions(batch.kid, batch.ts, rows, rows.t, right=True) - 1
    at = seen.clip(min=0)
    found = seen >= 0
    if len(batch.kid):
        found &= batch.kid[at] == rows.kid
        if batch.view.ttl_ms:
            found &= batch.ts[at] >= rows.t - batch.view.ttl_ms
    picks = pa.array(at, mask=~found)
    return {name: rows.in_chunk_order(column.take(picks) if len(batch.kid) else pa.nulls(len(at), column.type))
            for name, column in zip(batch.values.column_names, batch.values.columns, strict=True)}


def _compact(column: pa.ChunkedArray) -> pa.Array:
    """Strings with few distinct values as a dictionary: gathers and reorders then move small indices."""
    column = column.combine_chunks()
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)) or not len(column):
        return column
    encoded = column.dictionary_encode()
    return encoded if len(encoded.dictionary) * 4 <= len(column) else column
