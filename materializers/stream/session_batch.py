"""One micro-batch of a session view: read-modify-write of each entity's sessions, fenced by offsets.

Session merges (an out-of-order event filling a gap) need the whole state, so
unlike tiles the state is read (or taken from this process's cache of what it last
wrote), updated in Python with `featurestream.windows.sessions` and written back
with a compare-and-set on its version. Events at or below the stored offset of
their partition were applied before a crash and are skipped.
"""

from __future__ import annotations

from typing import Any

from featurestream.definitions import StreamViewSpec
from featurestream.online.keys import offset_field
from featurestream.online.series import order_key
from featurestream.windows import sessions
from materializers.stream.key_cache import cached_state_keys
from materializers.stream.session_cache import StoredSession

EXPIRY_MARGIN_MS = 3_600_000
# Sessions are pruned this far behind the newest one: partitions feeding one entity may lag each other.
PRUNE_SLACK_MS = 86_400_000


class SessionBatch:
    def __init__(self, project: str, view: StreamViewSpec) -> None:
        assert view.session_gap_ms is not None
        self.project = project
        self.view = view
        self.topic = view.source.topic
        self.gap_ms = view.session_gap_ms
        self.columns = [(a.name, a.function, a.column) for a in view.aggregations]
        self.expiry_ms = max(self.gap_ms + view.source.lateness_ms + PRUNE_SLACK_MS, view.ttl_ms or 0) \
            + EXPIRY_MARGIN_MS
        # Only `last` reads the order key: formatting one per event is skipped for views without it.
        self._ordered = any(function == "last" for _, function, _ in self.columns)
        self._events: dict[tuple[Any, ...], list[tuple[int, int, int, dict[str, tuple[str, Any]]]]] = {}
        self._partitions: dict[tuple[Any, ...], list[int]] = {}  # filled once events stop arriving
        self.key = cached_state_keys(project, view)

    def add(self, entity: tuple[Any, ...], partition: int, offset: int, ts_ms: int, row: dict[str, Any]) -> None:
        values = {name: (function, row[column]) for name, function, column in self.columns}
        events = self._events.get(entity)
        if events is None:
            self._events[entity] = [(partition, offset, ts_ms, values)]
        else:
            events.append((partition, offset, ts_ms, values))

    def __len__(self) -> int:
        return len(self._events)

    def entities(self) -> list[tuple[Any, ...]]:
        return list(self._events)

    def partitions(self, entity: tuple[Any, ...]) -> list[int]:
        """The source partitions of the entity's events, ascending (asked for several times per entity)."""
        known = self._partitions.get(entity)
        if known is None:
            events = self._events[entity]
            known = self._partitions[entity] = [events[0][0]] if len(events) == 1 else sorted({e[0] for e in events})
        return known

    def offset_field(self, partition: int) -> str:
        return offset_field(self.topic, partition)

    def read_fields(self, entity: tuple[Any, ...]) -> list[str]:
        return ["v", "s", *(self.offset_field(p) for p in self.partitions(entity))]

    def stored(self, entity: tuple[Any, ...], read: list[bytes | None]) -> StoredSession:
        """The reply to HMGET of `read_fields(entity)`, parsed."""
        version, blob, *offsets = read
        applied = {p: int(o) if o is not None else -1 for p, o in zip(self.partitions(entity), offsets, strict=True)}
        return StoredSession(version.decode() if version is not None else "", blob, applied)

    def update(self, entity: tuple[Any, ...], stored: StoredSession) -> tuple[bytes, dict[int, int]] | None:
        """The entity's new encoded state and last offset per partition, or None when every event was applied."""
        applied = stored.applied
        fresh = [e for e in self._events[entity] if e[1] > applied[e[0]]]
        if not fresh:
            return None
        state = sessions.decode(stored.blob) if stored.blob else []
        ordered = self._ordered
        for partition, offset, ts_ms, values in fresh:
            key = order_key(ts_ms, partition, offset) if ordered else None
            sessions.add_event(state, ts_ms, values, key, self.gap_ms)
        newest = state[-1][sessions.LAST]
        sessions.prune(state, newest - self.view.source.lateness_ms - PRUNE_SLACK_MS, self.gap_ms)
        last_offsets: dict[int, int] = {}
        for partition, offset, *_ in fresh:
            last_offsets[partition] = offset
        return sessions.encode(state), last_offsets
