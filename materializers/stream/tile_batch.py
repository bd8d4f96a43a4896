"""One micro-batch of a windowed view, pre-aggregated per entity, partition and tile.

Pre-aggregating keeps Redis work proportional to distinct tiles, not events.
Each (entity, partition) becomes one fenced segment of the TILE_MERGE script; a
segment Redis reports as partly applied (possible only right after a crash or
rebalance) is resent event by event, so no event counts twice.

Events are only collected as they arrive; the batch is aggregated at once when
its updates are built, with numpy grouping per tile series. Per event and view
that costs an append instead of a dict of cells per entity, and the main thread
(decoding the next batch) gives the writer thread the work.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import orjson
from msgspec import msgpack

from featurestream.definitions import StreamViewSpec
from featurestream.online.keys import offset_field
from featurestream.online.series import (
    LAST_KEY, Series, order_key, retention_ms, series_retention_ms, view_series,
)
from materializers.stream.key_cache import cached_state_keys

EXPIRY_MARGIN_MS = 3_600_000
# A cell's key is tile start * MAX_SERIES + series index.
MAX_SERIES = 1024
# component -> TILE_MERGE op kind
_KINDS = {"n": "i", "s": "f", "q": "f", "lo": "<", "hi": ">", "lv": "l"}
EMITTER_CACHE_SIZE = 1 << 16
Emitter = list[tuple[str, str, str | None]]  # per component: (component, field, order-key field)


@dataclass(slots=True)
class Segment:
    """One entity's events from one partition in the micro-batch: one fenced part of its key's update."""

    first: int
    last: int
    max_ts: int
    number: int  # the segment's place among the batch's segments


@dataclass(slots=True)
class _Events:
    """A set of the batch's events as columns: event time, offset, row, and the segment each belongs to."""

    ts: np.ndarray
    offsets: np.ndarray
    rows: list[dict[str, Any]]
    group: np.ndarray  # per event, the fenced segment (of `groups`) it is applied in
    groups: int


class TileBatch:
    def __init__(self, project: str, view: StreamViewSpec) -> None:
        self.project = project
        self.view = view
        self.topic = view.source.topic
        self.series = view_series(view)
        if len(self.series) >= MAX_SERIES:
            raise ValueError(f"stream view {view.name!r} keeps {len(self.series)} tile series; at most {MAX_SERIES - 1}")
        self.expiry_ms = max(retention_ms(view), view.ttl_ms or 0) + EXPIRY_MARGIN_MS
        retention = series_retention_ms(view)
        # A tile starting at or before (newest event time - span) has left every window: per series
        # [span, slide, the suffixes of its fields], so the script can name the fields to drop.
        self._spans = [retention[f"{s.column}|{s.slide_ms}"] + s.slide_ms for s in self.series]
        self.keep = msgpack.encode({
            f"{s.column}|{s.slide_ms}": [span, s.slide_ms, [*s.components, *([LAST_KEY] if "lv" in s.components else [])]]
            for s, span in zip(self.series, self._spans, strict=True)})
        # Scanning a hash for old tiles costs a pass over its fields: at most every tenth of the shortest retention.
        self.prune_every_ms = max(min(s.slide_ms for s in self.series), min(retention.values()) // 10)
        self.key = cached_state_keys(project, view)
        self._emitters = _emitters_of(self.series)
        self._events: list[tuple[tuple[Any, ...], int, int, int, dict[str, Any]]] = []
        self._batch: _Events | None = None  # the whole batch as columns, once `calls` has run

    def add(self, entity: tuple[Any, ...], partition: int, offset: int, ts_ms: int, row: dict[str, Any]) -> None:
        self._events.append((entity, partition, offset, ts_ms, row))

    def __len__(self) -> int:
        return len(self._events)

    def calls(self) -> list[tuple[str, list[Any], list[tuple[int, Segment]]]]:
        """(key, its update, its segments in update order) for every entity in the batch.

        A key's update, flat: newest event time, number of segments, then per segment (one per
        partition, ascending) its offset field, first and last offset, its ops' length and its ops.
        """
        entities, partitions, offsets, times, rows = zip(*self._events)
        codes: dict[tuple[Any, ...], int] = {}
        code = np.fromiter((codes.setdefault(e, len(codes)) for e in entities), np.int64, len(entities))
        partition = np.fromiter(partitions, np.int64, len(partitions))
        offset = np.fromiter(offsets, np.int64, len(offsets))
        ts = np.fromiter(times, np.int64, len(times))
        # Segments sort by entity (first seen first), then partition.
        width = int(partition.max()) + 1
        numbers, group = np.unique(code * width + partition, return_inverse=True)
        order = np.argsort(group, kind="stable")
        starts = np.searchsorted(group[order], np.arange(len(numbers)))
        firsts = np.minimum.reduceat(offset[order], starts).tolist()
        lasts = np.maximum.reduceat(offset[order], starts).tolist()
        max_ts = np.maximum.reduceat(ts[order], starts)
        segment_code = numbers // width
        partition_of = (numbers % width).tolist()
        key_starts = np.flatnonzero(np.r_[True, segment_code[1:] != segment_code[:-1]])
        key_newest = np.maximum.reduceat(max_ts, key_starts)
        newest_by_segment = np.repeat(key_newest, np.diff(np.r_[key_starts, len(numbers)]))
        self._batch = _Events(ts, offset, list(rows), group, len(numbers))
        ops = self._ops(self._batch, newest_by_segment, partition_of)

        max_ts_list = max_ts.tolist()
        segments = [Segment(f, la, m, n) for n, (f, la, m) in enumerate(zip(firsts, lasts, max_ts_list, strict=True))]
        out = []
        bounds = [*key_starts.tolist(), len(numbers)]
        for entity, newest, start, stop in zip(codes, key_newest.tolist(), bounds, bounds[1:], strict=False):
            update: list[Any] = [newest, stop - start]
            for number in range(start, stop):
                segment = segments[number]
                update += (self._offset_field(partition_of[number]), segment.first, segment.last, len(ops[number]))
                update += ops[number]
            out.append((self.key(entity), update, [(partition_of[n], segments[n]) for n in range(start, stop)]))
        return out

    def single_event_update(self, partition: int, segment: Segment) -> list[Any]:
        """One key's update replaying `segment` event by event, each its own fenced segment."""
        assert self._batch is not None, "calls() builds the batch's columns first"
        batch = self._batch
        chosen = np.flatnonzero(batch.group == segment.number)
        events = _Events(batch.ts[chosen], batch.offsets[chosen], [batch.rows[i] for i in chosen.tolist()],
                         np.arange(len(chosen)), len(chosen))
        ops = self._ops(events, np.full(len(chosen), segment.max_ts), [partition] * len(chosen))
        update: list[Any] = [segment.max_ts, len(chosen)]
        for offset, segment_ops in zip(events.offsets.tolist(), ops, strict=True):
            update += (self._offset_field(partition), offset, offset, len(segment_ops))
            update += segment_ops
        return update

    def _ops(self, events: _Events, newest: np.ndarray, partitions: list[int]) -> list[list[Any]]:
        """Per segment, the TILE_MERGE ops of its tiles, leaving out those the same call would prune.

        A tile starting at or before (its key's newest event - span) is one TILE_MERGE drops: writing
        it would only make Redis write, then prune it. Replaying history, many a micro-batch's are such.
        """
        out: list[list[Any]] = [[] for _ in range(events.groups)]
        emitters = self._emitters
        for index, (series, span) in enumerate(zip(self.series, self._spans, strict=True)):
            values = [row[series.column] for row in events.rows]
            chosen = np.flatnonzero(np.fromiter((v is not None for v in values), bool, len(values)))
            group = events.group[chosen]
            tile = events.ts[chosen]
            tile = tile - tile % series.slide_ms
            live = tile > newest[group] - span
            chosen, group, tile = chosen[live], group[live], tile[live]
            if not len(chosen):
                continue
            low = int(tile.min())
            cell_of = group * ((int(tile.max()) - low) // series.slide_ms + 1) + (tile - low) // series.slide_ms
            _, first, cell = np.unique(cell_of, return_index=True, return_inverse=True)
            cells = len(first)
            parts = _components(series.components, values, chosen, cell, cells, events)
            groups = group[first].tolist()
            emits = [emitters.get(where) or self._tile_emitters(where)
                     for where in (tile[first] * MAX_SERIES + index).tolist()]
            for position, component in enumerate(series.components):
                kind, held = _KINDS[component], parts[component]
                if component == "lv":
                    for g, emit, e, ts, offset in zip(groups, emits, held, parts["lv_ts"], parts["lv_offset"],
                                                      strict=True):
                        _, name, key_name = emit[position]
                        out[g] += (kind, name, encode_value(values[e]), key_name, order_key(ts, partitions[g], offset))
                elif component in ("lo", "hi"):
                    for g, emit, e in zip(groups, emits, held, strict=True):
                        out[g] += (kind, emit[position][1], repr(values[e]))
                else:
                    for g, emit, value in zip(groups, emits, held, strict=True):
                        out[g] += (kind, emit[position][1], value)
        return out

    def _offset_field(self, partition: int) -> str:
        return offset_field(self.topic, partition)

    def _tile_emitters(self, where: int) -> Emitter:
        """(component, field, order-key field) per component of one tile, named once per view."""
        tile, index = divmod(where, MAX_SERIES)
        series = self.series[index]
        prefix = f"{series.column}|{series.slide_ms}|{tile}|"
        emit = [(c, prefix + c, prefix + LAST_KEY if c == "lv" else None) for c in series.components]
        if len(self._emitters) >= EMITTER_CACHE_SIZE:
            self._emitters.clear()
        self._emitters[where] = emit
        return emit


def _components(components: tuple[str, ...], values: list[Any], chosen: np.ndarray, cell: np.ndarray,
                cells: int, events: _Events) -> dict[str, list[Any]]:
    """Per component, its value in every cell (min, max and last: the index of the event that holds it;
    `lv_ts` and `lv_offset`: that event's time and offset).

    Sums add in event order, as one event at a time would; min and max keep the first of equal values.
    """
    parts: dict[str, list[Any]] = {}
    if "n" in components:
        parts["n"] = np.bincount(cell, minlength=cells).tolist()
    picked = [values[e] for e in chosen.tolist()]
    if "s" in components:
        parts["s"] = np.bincount(cell, weights=np.array(picked, dtype=np.float64), minlength=cells).tolist()
    if "q" in components:
        squares = np.array([v * v for v in picked], dtype=np.float64)
        parts["q"] = np.bincount(cell, weights=squares, minlength=cells).tolist()
    for component, better in (("lo", operator.lt), ("hi", operator.gt)):
        if component in components:
            holder = [-1] * cells
            for e, c in zip(chosen.tolist(), cell.tolist(), strict=True):
                held = holder[c]
                if held < 0 or better(values[e], values[held]):
                    holder[c] = e
            parts[component] = holder
    if "lv" in components:
        # The greatest (event time, offset) per cell: sort by cell, then event time, then offset; take each cell's last.
        order = np.lexsort((events.offsets[chosen], events.ts[chosen], cell))
        ends = np.searchsorted(cell[order], np.arange(cells), side="right") - 1
        winners = chosen[order[ends]]
        parts["lv"] = winners.tolist()
        parts["lv_ts"] = events.ts[winners].tolist()
        parts["lv_offset"] = events.offsets[winners].tolist()
    return parts


@cache
def _emitters_of(series: tuple[Series, ...]) -> dict[int, Emitter]:
    """The tile field names of one view's series, across micro-batches: most events fall in the last ones' tiles."""
    return {}


def encode_value(value: Any) -> str:
    """`last` values keep their type through Redis: ints and floats as numbers, strings JSON-quoted."""
    return orjson.dumps(value).decode()
