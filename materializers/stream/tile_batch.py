"""One micro-batch of a windowed view, pre-aggregated per entity, partition and tile.

Pre-aggregating in Python keeps Redis work proportional to distinct tiles, not
events. Each (entity, partition) becomes one fenced segment of the TILE_MERGE
script; a segment Redis reports as partly applied (possible only right after a
crash or rebalance) is resent event by event, so no event counts twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

import orjson
from msgspec import msgpack

from featurestream.definitions import StreamViewSpec
from featurestream.online.keys import offset_field
from featurestream.online.series import (
    LAST_KEY, Series, order_key, retention_ms, series_retention_ms, view_series,
)
from materializers.stream.key_cache import cached_state_keys

EXPIRY_MARGIN_MS = 3_600_000
# Cell slots: count, sum, sum of squares, min, max, last value, last (ts, offset): a cell holds one partition.
N, S, Q, LO, HI, LV, LK = range(7)
# A cell's key is tile start * MAX_SERIES + series index.
MAX_SERIES = 1024
SERIES_MASK = MAX_SERIES - 1


@dataclass
class Segment:
    first: int
    last: int
    events: list[tuple[int, int, dict[str, Any]]] = field(default_factory=list)  # (offset, ts_ms, row)
    cells: dict[int, list[Any]] = field(default_factory=dict)  # cell_key(series, tile start) -> slots
    max_ts: int = 0


class TileBatch:
    def __init__(self, project: str, view: StreamViewSpec) -> None:
        self.project = project
        self.view = view
        self.topic = view.source.topic
        self.series = view_series(view)
        if len(self.series) >= MAX_SERIES:
            raise ValueError(f"stream view {view.name!r} keeps {len(self.series)} tile series; at most {MAX_SERIES - 1}")
        self._plan = [
            (i, s.column, s.slide_ms, "n" in s.components, "s" in s.components, "q" in s.components,
             "lo" in s.components, "hi" in s.components, "lv" in s.components)
            for i, s in enumerate(self.series)
        ]
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
        self.segments: dict[tuple[Any, ...], dict[int, Segment]] = {}
        self.key = cached_state_keys(project, view)
        self._emitters = _emitters_of(self.series)

    def add(self, entity: tuple[Any, ...], partition: int, offset: int, ts_ms: int, row: dict[str, Any]) -> None:
        by_partition = self.segments.get(entity)
        if by_partition is None:
            by_partition = self.segments[entity] = {}
        segment = by_partition.get(partition)
        if segment is None:
            segment = by_partition[partition] = Segment(offset, offset)
        segment.last = offset
        segment.events.append((offset, ts_ms, row))
        if ts_ms > segment.max_ts:
            segment.max_ts = ts_ms
        _accumulate(self._plan, segment.cells, ts_ms, offset, row)

    def __len__(self) -> int:
        return len(self.segments)

    def key_update(self, segments: list[tuple[int, Segment]]) -> list[Any]:
        """One key's part of a TILE_MERGE call, flat: newest event time, number of segments, segments."""
        newest = max(segment.max_ts for _, segment in segments)
        update: list[Any] = [newest, len(segments)]
        live = self._live_from(newest)
        for partition, segment in segments:
            self._segment(update, partition, segment.first, segment.last, segment.cells, live)
        return update

    def _live_from(self, newest: int) -> list[int]:
        """Per series, the cell key above which a tile is still live once the key's newest event is `newest`.

        A tile at or below it is one TILE_MERGE drops (start <= newest - span): writing it would only
        make Redis write, then prune it. Replaying history, most minute tiles of a micro-batch are such.
        """
        return [(newest - span) * MAX_SERIES + index for index, span in enumerate(self._spans)]

    def calls(self) -> list[tuple[str, list[Any], list[tuple[int, Segment]]]]:
        """(key, its update, its segments in update order) for every entity in the batch."""
        out = []
        for entity, by_partition in self.segments.items():
            segments = sorted(by_partition.items()) if len(by_partition) > 1 else list(by_partition.items())
            out.append((self.key(entity), self.key_update(segments), segments))
        return out

    def single_event_update(self, partition: int, segment: Segment) -> list[Any]:
        """One key's update replaying `segment` event by event, each its own fenced segment."""
        update: list[Any] = [segment.max_ts, len(segment.events)]
        live = self._live_from(segment.max_ts)
        for offset, ts_ms, row in segment.events:
            cells: dict[int, list[Any]] = {}
            _accumulate(self._plan, cells, ts_ms, offset, row)
            self._segment(update, partition, offset, offset, cells, live)
        return update

    def _segment(self, update: list[Any], partition: int, first: int, last: int,
                 cells: dict[int, list[Any]], live: list[int]) -> None:
        """Append one fenced segment: offset field, first and last offset, its ops' length, its ops."""
        header = len(update) + 3
        update += (offset_field(self.topic, partition), first, last, 0)
        emitters = self._emitters
        for where, cell in cells.items():
            if where <= live[where & SERIES_MASK]:
                continue
            emit = emitters.get(where)
            if emit is None:
                emit = self._tile_emitters(where)
            for kind, name, slot, key_name in emit:
                if kind == "i":
                    update += ("i", name, cell[slot])
                elif kind == "f":
                    update += ("f", name, float(cell[slot]))
                elif kind == "l":
                    if cell[LK] is not None:
                        update += ("l", name, encode_value(cell[LV]), key_name,
                                   order_key(cell[LK][0], partition, cell[LK][1]))
                elif cell[slot] is not None:
                    update += (kind, name, repr(cell[slot]))
        update[header] = len(update) - header - 1

    def _tile_emitters(self, where: int) -> list[tuple[str, str, int, str | None]]:
        """(op kind, field, cell slot, order-key field) per component of one tile, named once per view."""
        tile, index = divmod(where, MAX_SERIES)
        series = self.series[index]
        prefix = f"{series.column}|{series.slide_ms}|{tile}|"
        emit = [(_OPS[c][0], prefix + c, _OPS[c][1], prefix + LAST_KEY if c == "lv" else None)
                for c in series.components]
        if len(self._emitters) >= EMITTER_CACHE_SIZE:
            self._emitters.clear()
        self._emitters[where] = emit
        return emit


# component -> (TILE_MERGE op kind, cell slot)
_OPS = {"n": ("i", N), "s": ("f", S), "q": ("f", Q), "lo": ("<", LO), "hi": (">", HI), "lv": ("l", LV)}
EMITTER_CACHE_SIZE = 1 << 16


@cache
def _emitters_of(series: tuple[Series, ...]) -> dict[int, list[tuple[str, str, int, str | None]]]:
    """The tile field names of one view's series, across micro-batches: most events fall in the last ones' tiles."""
    return {}


def _accumulate(plan: list[tuple[Any, ...]], cells: dict[int, list[Any]], ts_ms: int,
                offset: int, row: dict[str, Any]) -> None:
    for index, column, slide, has_n, has_s, has_q, has_lo, has_hi, has_last in plan:
        value = row[column]
        if value is None:
            continue
        where = (ts_ms - ts_ms % slide) * MAX_SERIES + index  # an int key: no tuple to build and hash per event
        cell = cells.get(where)
        if cell is None:
            cell = cells[where] = [0, 0.0, 0.0, None, None, None, None]
        if has_n:
            cell[N] += 1
        if has_s:
            cell[S] += value
        if has_q:
            cell[Q] += value * value
        if has_lo and (cell[LO] is None or value < cell[LO]):
            cell[LO] = value
        if has_hi and (cell[HI] is None or value > cell[HI]):
            cell[HI] = value
        if has_last:
            key = (ts_ms, offset)  # the cell's partition is fixed: the order key is formatted once, in _segment
            if cell[LK] is None or key > cell[LK]:
                cell[LK] = key
                cell[LV] = value


def encode_value(value: Any) -> str:
    """`last` values keep their type through Redis: ints and floats as numbers, strings JSON-quoted."""
    return orjson.dumps(value).decode()
