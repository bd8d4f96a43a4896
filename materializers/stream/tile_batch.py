"""One micro-batch of a windowed view: each entity's events merged into its tiles in Python.

The sink hands over the entity's stored tiles (`featurestream.online.series`
documents the encoding) and the offsets they include; the events past those are
merged one at a time, in arrival order, into the tile of each series they fall in,
tiles that left every window are dropped, and the whole state goes back by
compare-and-set (see `state_batch`). Live traffic brings one event per entity and
micro-batch, history a handful: per-event work in Python beats grouping the batch
first, and Redis does one write per entity, whatever the number of tiles.
"""

from __future__ import annotations

from typing import Any

from featurestream.definitions import StreamViewSpec
from featurestream.online.series import (
    NEWEST, TileState, decode_tiles, encode_tiles, order_key, retention_ms, series_retention_ms, tile_at_or_before,
    view_series,
)
from featurestream.windows.aggregations import merge_slots
from materializers.stream.state_batch import EXPIRY_MARGIN_MS, Entity, StateBatch, last_offsets
from materializers.stream.state_cache import StoredState


class TileBatch(StateBatch):
    def __init__(self, project: str, view: StreamViewSpec) -> None:
        super().__init__(project, view)
        self.series = view_series(view)
        self.expiry_ms = max(retention_ms(view), view.ttl_ms or 0) + EXPIRY_MARGIN_MS
        retention = series_retention_ms(view)
        # Per series: name, column, slide, span (a tile starting at or before the newest event time
        # minus it has left every window), its slots' merge kinds, a tile's length and the component.
        self._plan = [(s.name, s.column, s.slide_ms, retention[f"{s.column}|{s.slide_ms}"] + s.slide_ms,
                       s.kinds, s.stride, s.component) for s in self.series]
        self._names = frozenset([NEWEST, *(s.name for s in self.series)])

    def decode(self, blob: bytes | None) -> TileState:
        """The stored state, less the series this view no longer keeps."""
        names = self._names
        return {name: tiles for name, tiles in decode_tiles(blob).items() if name in names}

    def update(self, entity: Entity, stored: StoredState) -> tuple[Any, bytes, dict[int, int]] | None:
        fresh = self.fresh(entity, stored.applied)
        if not fresh:
            return None
        state: TileState = stored.state
        # Tiles are kept relative to the newest event ever applied (a batch from a lagging partition
        # may hold only old events), so the state records it.
        newest = max(ts for _, _, ts, _ in fresh) if len(fresh) > 1 else fresh[0][2]
        held = state.get(NEWEST)
        if held is not None and held > newest:
            newest = held
        state[NEWEST] = newest
        for name, column, slide, span, kinds, stride, component in self._plan:
            cutoff = newest - span
            tiles = state.get(name)
            for partition, offset, ts, row in fresh:
                value = row[column]
                if value is None:
                    continue
                start = ts - ts % slide
                if start <= cutoff:
                    continue
                slots = _slots(component, value, ts, partition, offset)
                if tiles is None:
                    tiles = state[name] = [start, *slots]
                else:
                    _merge(tiles, kinds, stride, start, slots)
            if tiles is not None and tiles[0] <= cutoff:
                end = stride
                while end < len(tiles) and tiles[end] <= cutoff:
                    end += stride
                if end == len(tiles):
                    del state[name]
                else:
                    del tiles[:end]
        return state, encode_tiles(state), last_offsets(fresh)


def _slots(component: str, value: Any, ts: int, partition: int, offset: int) -> list[Any]:
    """One event's tile slots for a component: count 1, the value, its square, or it and its order key."""
    if component == "n":
        return [1]
    if component == "q":
        return [float(value) * value]  # a float always, as `accumulate` keeps it
    if component == "lv":
        return [value, order_key(ts, partition, offset)]
    return [value]


def _merge(tiles: list[Any], kinds: tuple[str, ...], stride: int, start: int, slots: list[Any]) -> None:
    """Merge one tile's slots into a series' flat tiles, kept sorted by start."""
    at = tile_at_or_before(tiles, stride, start)
    if at >= 0 and tiles[at] == start:
        merge_slots(tiles, at + 1, kinds, slots, 0)
    else:
        tiles[at + stride:at + stride] = [start, *slots]
