"""Sorted arrays of events or batch rows, and the training rows' places among them, found by binary search.

SQL window functions and ASOF joins over events or batch rows and millions of
training rows cost a sort (and for windows a segment tree) per aggregate and
frame. Here the events of a view's entities (or a batch view's rows) are
sorted once by (entity id, time, tie-break), and a chunk of training rows,
sorted by (entity id, time), is placed among them by binary search on a packed
(entity id, time) key. A window is the frame `[start, end)` between two such
places, and every component is a vectorized reduction over it: counts from
prefix counts (exact); sums, sums of squares, min and max with
`ufunc.reduceat` (summed in event order, like SQL); `last` as the latest
non-null index before the frame's end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from featurestream.definitions import AggregationSpec
from featurestream.offline.engine import ident
from featurestream.offline.entities import ENTITY_TABLE
from featurestream.offline.errors import OfflineError
from featurestream.offline.events import SEQ, TS
from featurestream.windows.aggregations import COMPONENTS

KID = "__kid"
POS = "__pos"


def number_entities(con: duckdb.DuckDBPyConnection, keys: Sequence[str], name: str) -> None:
    """Temp table `name`: each distinct non-null key of the training rows with an entity id `__kid` (0, 1, ...)."""
    key_list = ", ".join(ident(k) for k in keys)
    not_null = " AND ".join(f"{ident(k)} IS NOT NULL" for k in keys)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {ident(name)} AS
        SELECT {key_list}, (row_number() OVER () - 1)::BIGINT AS {KID}
        FROM (SELECT DISTINCT {key_list} FROM {ENTITY_TABLE} WHERE {not_null})""")


@dataclass(frozen=True)
class Rows:
    """One chunk of training rows for one set of join keys, sorted by (entity id, time)."""

    pos: np.ndarray   # position in the chunk (input order)
    kid: np.ndarray   # entity id, -1 when a key is null or unknown
    t: np.ndarray     # time (ms)

    def in_chunk_order(self, values: pa.Array | pa.ChunkedArray) -> pa.Array:
        """Values of these sorted rows, put back into the chunk's order."""
        return scatter(values, self.pos)


def sort_rows(kid: np.ndarray, t: np.ndarray) -> Rows:
    """A chunk's rows (entity ids and times in input order) sorted by entity id, then roughly by time.

    Nothing needs the exact order: it only makes the binary searches read forward and the
    frames ascend, so reductions never go back. So (entity id, time, position) are packed into
    one int64, the time losing low bits if all do not fit, and sorted as plain numbers, several
    times faster than an argsort.
    """
    if len(t) == 0:
        return Rows(np.zeros(0, np.int64), kid, t)
    position_bits = (len(t) - 1).bit_length()
    entity_bits = (int(kid.max()) + 1).bit_length()
    base = int(t.min())
    time_bits = (int(t.max()) - base).bit_length()
    room = 63 - entity_bits - position_bits
    if room < 0:
        order = np.lexsort((t, kid))
        return Rows(order, kid[order], t[order])
    drop = max(0, time_bits - room)
    packed = np.sort(((kid + 1) << (room + position_bits)) | (((t - base) >> drop) << position_bits)
                     | np.arange(len(t)))
    order = packed & ((1 << position_bits) - 1)
    return Rows(order, (packed >> (room + position_bits)) - 1, t[order])  # entity ids read off the sorted keys


def scatter(values: pa.Array | pa.ChunkedArray, positions: np.ndarray) -> pa.Array:
    """`out[positions[i]] = values[i]` for a permutation `positions`.

    A gather by the inverse permutation reads at random, a cache miss a value; fixed-width values
    (and dictionary indices) are instead written at random by numpy, about twice as fast.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    kind = values.type
    if pa.types.is_dictionary(kind):
        return values.dictionary.take(scatter(values.indices, positions))
    fixed = pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_temporal(kind)
    if not fixed or kind.bit_width not in (8, 16, 32, 64):
        inverse = np.empty(len(positions), np.int64)
        inverse[positions] = np.arange(len(positions))
        return values.take(pa.array(inverse))
    data = np.frombuffer(values.buffers()[1], np.dtype(f"u{kind.bit_width // 8}"))[values.offset:values.offset + len(values)]
    out = np.empty_like(data)
    out[positions] = data
    validity = None
    if values.null_count:
        valid = np.empty(len(values), bool)
        valid[positions] = values.is_valid().to_numpy(zero_copy_only=False)
        validity = pa.array(valid).buffers()[1]
    return pa.Array.from_buffers(kind, len(values), [validity, pa.py_buffer(out)], values.null_count)


def positions(kid: np.ndarray, ts: np.ndarray, rows: Rows, x: np.ndarray, right: bool) -> np.ndarray:
    """Per row, where (its entity, time x) falls in the sorted (kid, ts): after equal times if `right`.

    Entity id and time are packed into one int64 (time relative to the earliest); when both do
    not fit in 62 bits, the entities are taken in ranges that do.
    """
    out = np.zeros(len(x), np.int64)
    if len(ts) == 0 or len(x) == 0:
        return out
    base = min(int(ts.min()), int(x.min()))
    bits = (max(int(ts.max()), int(x.max())) - base).bit_length()
    per = 1 << max(0, 62 - bits)
    side = "right" if right else "left"
    for lo in range(0, int(kid[-1]) + 1, per):
        first, last = np.searchsorted(kid, [lo, lo + per])
        chosen = (rows.kid >= lo) & (rows.kid < lo + per)
        packed = ((kid[first:last] - lo) << bits) | (ts[first:last] - base)
        asked = ((rows.kid[chosen] - lo) << bits) | (x[chosen] - base)
        out[chosen] = first + np.searchsorted(packed, asked, side)
    return out


class Events:
    """A view's events in (entity id, time, partition, offset) order, with per-column work done once.

    The work is kept on the instance (not in a module-level cache), so it goes when the export does.
    """

    def __init__(self, kid: np.ndarray, ts: np.ndarray, values: pa.Table) -> None:
        self.kid = kid
        self.ts = ts
        self.values = values
        self._memo: dict[tuple[str, ...], Any] = {}
        # Per-event indexes and prefix counts (kept for the whole export): half the memory in int32.
        self._index = np.int32 if len(ts) < 2**31 - 1 else np.int64

    def once(self, key: tuple[str, ...], make: Callable[[], Any]) -> Any:
        """`make()`, computed on the first call with this key and kept."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def end(self, rows: Rows) -> np.ndarray:
        """Per row, the end of its entity's events at or before its time."""
        return positions(self.kid, self.ts, rows, rows.t, right=True)

    def column(self, name: str) -> pa.Array:
        return self.once(("column", name), lambda: self.values[name].combine_chunks())

    def valid(self, name: str) -> np.ndarray:
        def make() -> np.ndarray:
            column = self.column(name)
            return column.is_valid().to_numpy(zero_copy_only=False) if column.null_count else np.ones(len(column), bool)
        return self.once(("valid", name), make)

    def counted(self, name: str) -> np.ndarray:
        """Prefix counts of non-null values: the count over [start, end) is counted[end] - counted[start]."""
        return self.once(("counted", name), lambda: np.concatenate([[0], np.cumsum(self.valid(name), dtype=self._index)]))

    def latest(self, name: str) -> np.ndarray:
        """Per event, the index of the latest non-null value at or before it (-1 for none), then a -1."""
        def make() -> np.ndarray:
            valid = self.valid(name)
            return np.append(np.maximum.accumulate(np.where(valid, np.arange(len(valid), dtype=self._index), -1)), -1)
        return self.once(("latest", name), make)

    def filled(self, agg: AggregationSpec, part: str) -> tuple[np.ndarray, float]:
        """The numbers `part`'s reduction runs over (nulls as its neutral value), and that value."""
        def make() -> tuple[np.ndarray, float]:
            numbers = _numbers(self.column(agg.column), agg)
            if part == "q":
                return numbers.astype(np.float64) ** 2, 0
            if part == "s":
                return numbers, 0
            fill = _extreme(numbers, high=part == "lo")
            return np.where(self.valid(agg.column), numbers, fill), fill
        return self.once(("filled", agg.column, part), make)


def load_events(con: duckdb.DuckDBPyConnection, events: str, keys: Sequence[str],
                aggregations: Sequence[AggregationSpec], numbered: str) -> Events:
    """The events of the training rows' entities (numbered in table `numbered`), sorted by DuckDB.

    A column only counted is fetched as a presence flag (true or null), so a string id costs the
    sort one byte.
    """
    columns = sorted({a.column for a in aggregations})
    counted = {c for c in columns if all(a.function == "count" for a in aggregations if a.column == c)}
    key_list = ", ".join(ident(k) for k in keys)
    values = "".join(f", CASE WHEN ev.{ident(c)} IS NOT NULL THEN true END AS {ident(c)}" if c in counted
                     else f", ev.{ident(c)}" for c in columns)
    table = con.sql(f"""SELECT k.{KID}, ev.{TS}{values} FROM {ident(events)} ev JOIN {ident(numbered)} k
        USING ({key_list}) ORDER BY k.{KID}, ev.{SEQ}""").to_arrow_table()  # SEQ starts with the event time
    return Events(ints(table[KID]), ints(table[TS]), table.select(columns))


def components(events: Events, agg: AggregationSpec, start: np.ndarray, end: np.ndarray,
               prefix: str) -> dict[str, pa.Array]:
    """The components (`prefix_n`, `prefix_s`, ...) of `agg` over each row's events `[start, end)`."""
    name = agg.column
    counted = events.counted(name)
    n = counted[end] - counted[start]
    empty = n == 0
    column = events.column(name)
    out: dict[str, pa.Array] = {}
    for part, _ in COMPONENTS[agg.function]:
        if part == "n":
            out[f"{prefix}_n"] = pa.array(n)
        elif part == "lv":
            at = np.where(end > 0, events.latest(name)[end - 1], -1)  # end - 1 == -1 picks the appended -1
            found = at >= start
            out[f"{prefix}_lv"] = column.take(pa.array(np.where(found, at, 0), mask=~found)) if len(column) else (
                pa.nulls(len(end), column.type))
        else:
            filled, fill = events.filled(agg, part)
            ufunc = np.add if part in ("s", "q") else np.minimum if part == "lo" else np.maximum
            reduced = pa.array(_reduce(ufunc, filled, start, end, fill), mask=empty)
            out[f"{prefix}_{part}"] = reduced.cast(column.type) if pa.types.is_timestamp(column.type) else reduced
    return out


def _numbers(column: pa.Array, agg: AggregationSpec) -> np.ndarray:
    """The column as int64 or float64, nulls as 0 (they are masked or add nothing); timestamps, which only a
    min or max takes, as int64 in their unit."""
    kind = column.type
    if pa.types.is_floating(kind):
        target = pa.float64()
    elif (pa.types.is_integer(kind) or pa.types.is_boolean(kind) or pa.types.is_null(kind)
          or (pa.types.is_timestamp(kind) and agg.function in ("min", "max"))):
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


def ints(column: pa.ChunkedArray) -> np.ndarray:
    return column.to_numpy().astype(np.int64, copy=False)
