"""One micro-batch of a windowed view: each entity's events merged into its tiles.

The sink hands over the entity's stored tiles (`featurestream.online.series`
documents the encoding) and the offsets they include; the events past those are
merged series by series, in arrival order, into the tile they fall in, tiles that
left every window are dropped, and the whole state goes back by compare-and-set
(see `state_batch`). Live traffic brings one event per entity and micro-batch,
a backlog a handful: a plain loop per series beats grouping the batch first, and
Redis does one write per entity, whatever the number of tiles. The state, its
fold and its encoding are Rust's (`native/src/tiles.rs`): as Python lists and
numbers the fold was a third of a replay's CPU, and half of what remained was
following their pointers.
"""

from __future__ import annotations

from featurestream_native import EntityEvents, TilePlan, TileState

from featurestream.definitions import StreamViewSpec
from featurestream.online.series import retention_ms, series_retention_ms, view_series
from materializers.stream.state_batch import EXPIRY_MARGIN_MS, Entity, StateBatch


class TileBatch(StateBatch):
    def __init__(self, project: str, view: StreamViewSpec, events: EntityEvents | None = None) -> None:
        super().__init__(project, view, events)
        self.series = view_series(view)
        self.expiry_ms = max(retention_ms(view), view.ttl_ms or 0) + EXPIRY_MARGIN_MS
        retention = series_retention_ms(view)
        # Per series: name, column, slide, span (a tile starting at or before the newest event time
        # minus it has left every window), how its value slot merges, a tile's length and the component.
        self._plan = TilePlan([(s.name, s.column, s.slide_ms, retention[f"{s.column}|{s.slide_ms}"] + s.slide_ms,
                                s.kinds[0], s.stride, s.component) for s in self.series])

    @staticmethod
    def columns(view: StreamViewSpec) -> list[str]:
        return list(dict.fromkeys(s.column for s in view_series(view)))

    def decode(self, blob: bytes | None) -> TileState:
        """The stored state, less the series this view no longer keeps."""
        return self._plan.decode(blob)

    def update(self, entity: Entity, state: TileState, applied: dict[int, int]) -> tuple[bytes, dict[int, int]] | None:
        # Tiles are kept relative to the newest event ever applied (a batch from a lagging partition
        # may hold only old events), which the state records.
        offsets = self._plan.fold(state, self.events, entity, applied)
        if offsets is None:
            return None
        return self._plan.encode(state), offsets
