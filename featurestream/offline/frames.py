"""Per-row frames of events, located and aggregated with numpy over the events sorted once.

SQL window functions over events and training rows unioned cost a segment
tree per aggregate and frame (the slowest step of an export). Here the events
of a view's entities are sorted once by (entity, event time, partition,
offset); each training row's frame `[start, end)` in that order is found by
binary search on a packed (entity id, time) key, and every component is a
vectorized reduction over it: counts from prefix counts (exact), sums, sums of
squares, min and max with `ufunc.reduceat` (summed in event order, like SQL),
`last` as the latest non-null index at or before the frame's end.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from featurestream.definitions import AggregationSpec
from featurestream.offline.engine import ident
from featurestream.offline.entities import ENTITY_TABLE, ROW, T
from featurestream.offline.errors import OfflineError
from featurestream.offline.events import SEQ, TS
from featurestream.windows.aggregations import COMPONENTS

_KID = "__kid"


@dataclass(frozen=True)
class Events:
    """A view's events in (entity id, time, partition, offset) order, and the training rows' entity ids."""

    kid: np.ndarray       # entity id per event, ascending
    ts: np.ndarray        # event time (ms)
    values: pa.Table      # the aggregated columns, same order
    row: np.ndarray       # training rows (sorted by entity id, then time): __row
    row_kid: np.ndarray   # their entity id, -1 when a key is null
    t: np.ndarray         # their time (ms)

    @functools.cached_property
    def end(self) -> np.ndarray:
        """Per training row, the end of its events at or before t: shared by the views of these events."""
        return positions(self, self.t, right=True)


def load_events(con: duckdb.DuckDBPyConnection, events: str, keys: Sequence[str],
                aggregations: Sequence[AggregationSpec], name: str) -> Events:
    """Number the training rows' distinct entities (temp table `name`), fetch their events sorted (DuckDB sorts).

    A column only counted is fetched as a presence flag (true or null), so a string id costs the
    sort one byte. The training rows come sorted too, by (entity id, time): their frames then
    start and end in ascending order, which keeps `reduceat`'s work to the frames themselves.
    """
    columns = sorted({a.column for a in aggregations})
    counted = {c for c in columns if all(a.function == "count" for a in aggregations if a.column == c)}
    key_list = ", ".join(ident(k) for k in keys)
    not_null = " AND ".join(f"{ident(k)} IS NOT NULL" for k in keys)
    table = ident(name)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {table} AS
        SELECT {key_list}, (row_number() OVER () - 1)::BIGINT AS {_KID}
        FROM (SELECT DISTINCT {key_list} FROM {ENTITY_TABLE} WHERE {not_null})""")
    values = "".join(f", CASE WHEN ev.{ident(c)} IS NOT NULL THEN true END AS {ident(c)}" if c in counted
                     else f", ev.{ident(c)}" for c in columns)
    sorted_events = con.sql(f"""SELECT k.{_KID}, ev.{TS}{values} FROM {ident(events)} ev JOIN {table} k USING ({key_list})
        ORDER BY k.{_KID}, ev.{SEQ}""").to_arrow_table()  # SEQ starts with the event time
    rows = con.sql(f"""SELECT e.{ROW}, coalesce(k.{_KID}, -1) AS {_KID}, e.{T}
        FROM {ENTITY_TABLE} e LEFT JOIN {table} k USING ({key_list}) ORDER BY {_KID}, e.{T}""").to_arrow_table()
    return Events(kid=_ints(sorted_events[_KID]), ts=_ints(sorted_events[TS]),
                  values=sorted_events.select(columns), row=_ints(rows[ROW]), row_kid=_ints(rows[_KID]),
                  t=_ints(rows[T]))


def positions(ev: Events, x: np.ndarray, right: bool) -> np.ndarray:
    """Per training row, where (its entity, time x) falls among the events: after equal times if `right`.

    Entity id and time are packed into one int64 (time relative to the earliest); when both do
    not fit in 62 bits, the entities are taken in chunks that do.
    """
    out = np.zeros(len(x), np.int64)
    if len(ev.ts) == 0 or len(x) == 0:
        return out
    base = min(int(ev.ts.min()), int(x.min()))
    bits = (max(int(ev.ts.max()), int(x.max())) - base).bit_length()
    per = 1 << max(0, 62 - bits)
    side = "right" if right else "left"
    for lo in range(0, int(ev.kid[-1]) + 1, per):
        first, last = np.searchsorted(ev.kid, [lo, lo + per])
        chosen = (ev.row_kid >= lo) & (ev.row_kid < lo + per)
        packed = ((ev.kid[first:last] - lo) << bits) | (ev.ts[first:last] - base)
        asked = ((ev.row_kid[chosen] - lo) << bits) | (x[chosen] - base)
        out[chosen] = first + np.searchsorted(packed, asked, side)
    return out


def components(ev: Events, agg: AggregationSpec, start: np.ndarray, end: np.ndarray, prefix: str
               ) -> dict[str, pa.Array]:
    """The components (`prefix_n`, `prefix_s`, ...) of `agg` over each row's events `[start, end)`."""
    column = ev.values[agg.column].combine_chunks()
    valid = column.is_valid().to_numpy(zero_copy_only=False) if column.null_count else np.ones(len(column), bool)
    counted = np.concatenate([[0], np.cumsum(valid, dtype=np.int64)])
    n = counted[end] - counted[start]
    empty = n == 0
    out: dict[str, pa.Array] = {}
    for part, _ in COMPONENTS[agg.function]:
        if part == "n":
            out[f"{prefix}_n"] = pa.array(n)
        elif part == "lv":
            latest = np.maximum.accumulate(np.where(valid, np.arange(len(valid)), -1))
            at = np.where(end > 0, np.append(latest, -1)[end - 1], -1)  # end - 1 == -1 picks the appended -1
            found = at >= start
            out[f"{prefix}_lv"] = column.take(pa.array(np.where(found, at, 0), mask=~found)) if len(column) else (
                pa.nulls(len(end), column.type))
        else:
            numbers = _numbers(column, agg, valid)
            if part == "q":
                numbers = numbers.astype(np.float64) ** 2
            ufunc, fill = {"s": (np.add, 0), "q": (np.add, 0),
                           "lo": (np.minimum, _extreme(numbers, high=True)),
                           "hi": (np.maximum, _extreme(numbers, high=False))}[part]
            filled = np.where(valid, numbers, fill) if part in ("lo", "hi") else numbers
            out[f"{prefix}_{part}"] = pa.array(_reduce(ufunc, filled, start, end, fill), mask=empty)
    return out


def store(con: duckdb.DuckDBPyConnection, name: str, columns: dict[str, pa.Array]) -> None:
    """Copy per-row results into DuckDB temp table `name`: under its memory limit, spilled if need be,
    instead of Python's heap for as long as the export runs."""
    con.register(f"{name}_arrow", pa.table(columns))
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {ident(name)} AS SELECT * FROM {ident(name + '_arrow')}")
    finally:
        con.unregister(f"{name}_arrow")


def _numbers(column: pa.Array, agg: AggregationSpec, valid: np.ndarray) -> np.ndarray:
    """The column as int64 or float64, nulls as 0 (they are masked or add nothing)."""
    kind = column.type
    if pa.types.is_floating(kind):
        target = pa.float64()
    elif pa.types.is_integer(kind) or pa.types.is_boolean(kind) or pa.types.is_null(kind):
        target = pa.int64()
    else:
        raise OfflineError(f"aggregation {agg.name!r} ({agg.function} of {agg.column!r}) needs numbers, "
                           f"but the column holds {kind}")
    return pc.fill_null(column.cast(target), 0).to_numpy(zero_copy_only=False)


def _extreme(numbers: np.ndarray, high: bool) -> float:
    if numbers.dtype.kind == "f":
        return np.inf if high else -np.inf
    info = np.iinfo(numbers.dtype)
    return info.max if high else info.min


def _reduce(ufunc: np.ufunc, values: np.ndarray, start: np.ndarray, end: np.ndarray, fill: float
            ) -> np.ndarray:
    """`ufunc` over `values[start:end]` per row (meaningless where empty: the caller masks those).

    reduceat also reduces each gap between one frame's end and the next frame's start: with
    frames in ascending order those gaps are disjoint, so the total work is linear.
    """
    if len(start) == 0:
        return values[:0]
    padded = np.append(values, np.array([fill], values.dtype))  # an end equal to len(values) stays in range
    bounds = np.empty(2 * len(start), np.int64)
    bounds[0::2], bounds[1::2] = start, end
    return ufunc.reduceat(padded, bounds)[0::2]


def _ints(column: pa.ChunkedArray) -> np.ndarray:
    return column.to_numpy().astype(np.int64, copy=False)
