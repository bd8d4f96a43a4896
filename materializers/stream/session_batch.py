"""One micro-batch of a session view: each entity's sessions updated in Python, fenced by offsets.

Session merges (an out-of-order event filling a gap) need the whole state, which
`featurestream.windows.sessions` updates; the sink reads it or takes it from its
cache and writes it back by compare-and-set (see `state_batch`).
"""

from __future__ import annotations

from typing import Any

from featurestream.definitions import StreamViewSpec
from featurestream.online.series import order_key
from featurestream.windows import sessions
from materializers.stream.state_batch import EXPIRY_MARGIN_MS, Entity, EntityEvents, StateBatch, last_offsets
from materializers.stream.state_cache import StoredState

# Sessions are pruned this far behind the newest one: partitions feeding one entity may lag each other.
PRUNE_SLACK_MS = 86_400_000


class SessionBatch(StateBatch):
    def __init__(self, project: str, view: StreamViewSpec, events: EntityEvents | None = None) -> None:
        assert view.session_gap_ms is not None
        super().__init__(project, view, events)
        self.gap_ms = view.session_gap_ms
        self.columns = [(a.name, a.function, a.column) for a in view.aggregations]
        self.expiry_ms = max(self.gap_ms + view.source.lateness_ms + PRUNE_SLACK_MS, view.ttl_ms or 0) \
            + EXPIRY_MARGIN_MS
        # Only `last` reads the order key: formatting one per event is skipped for views without it.
        self._ordered = any(function == "last" for _, function, _ in self.columns)

    def decode(self, blob: bytes | None) -> sessions.SessionState:
        return sessions.decode(blob) if blob else []

    def update(self, entity: Entity, stored: StoredState) -> tuple[Any, bytes, dict[int, int]] | None:
        fresh = self.events.fresh(entity, stored.applied)
        if not fresh:
            return None
        state = stored.state
        ordered, columns = self._ordered, self.columns
        for partition, offset, ts_ms, row in fresh:
            key = order_key(ts_ms, partition, offset) if ordered else None
            sessions.add_event(state, ts_ms, row, columns, key, self.gap_ms)
        newest = state[-1][sessions.LAST]
        sessions.prune(state, newest - self.view.source.lateness_ms - PRUNE_SLACK_MS, self.gap_ms)
        return state, sessions.encode(state), last_offsets(fresh)
