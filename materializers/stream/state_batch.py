"""What the Redis sink needs of one view's micro-batch: per entity, its key, its fences and its new state.

Every view keeps an entity's state in one encoded field (`s`) of the entity's hash.
It is updated in this process (by the native folds, from its cache of what it last
wrote, or read first) and written back by a compare-and-set on its version (`v`), together with
the last applied offset of each source partition. Events at or below their
partition's stored offset were applied before a crash or rebalance and are skipped,
so nothing counts twice, and no update needs Redis to run more than the check.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from typing import Any

from featurestream.definitions import StreamViewSpec
from featurestream.online.keys import OldLayoutError, offset_field
from materializers.stream.key_cache import cached_state_keys
from materializers.stream.state_cache import StoredState

EXPIRY_MARGIN_MS = 3_600_000
Entity = tuple[Any, ...]
Event = tuple[int, int, int, dict[str, Any]]  # partition, offset, event time, row


class EntityEvents:
    """One micro-batch's events per entity, in arrival order. Views keyed alike and fed the same udf output
    share one (a user's windows and sessions): the event is added once, its partitions found once."""

    def __init__(self) -> None:
        self._events: defaultdict[Entity, list[Event]] = defaultdict(list)
        self._partitions: dict[Entity, list[int]] = {}  # filled once events stop arriving

    def add(self, entity: Entity, partition: int, offset: int, ts_ms: int, row: dict[str, Any]) -> None:
        self._events[entity].append((partition, offset, ts_ms, row))

    def __len__(self) -> int:
        return len(self._events)

    def entities(self) -> list[Entity]:
        return list(self._events)

    def partitions(self, entity: Entity) -> list[int]:
        """The source partitions of the entity's events, ascending (asked for several times per entity)."""
        known = self._partitions.get(entity)
        if known is None:
            events = self._events[entity]
            known = self._partitions[entity] = [events[0][0]] if len(events) == 1 else sorted({e[0] for e in events})
        return known

    def fresh(self, entity: Entity, applied: dict[int, int]) -> list[Event]:
        """The entity's events past their partition's applied offset, in arrival order: the batch's own list
        when all are (the common case: filtering every entity's events cost 5% of a replay's CPU), which the
        views sharing these events all read, so callers must not change it."""
        events = self._events[entity]
        partitions = self.partitions(entity)
        # Offsets ascend in arrival order: if a single partition's first event is past the fence, all are.
        if len(partitions) == 1 and events[0][1] > applied[partitions[0]]:
            return events
        return [e for e in events if e[1] > applied[e[0]]]


class StateBatch(ABC):
    expiry_ms: int  # every written key expires this long after its last write

    def __init__(self, project: str, view: StreamViewSpec, events: EntityEvents | None = None) -> None:
        self.project = project
        self.view = view
        self.topic = view.source.topic
        self.key = cached_state_keys(project, view)
        self.events = EntityEvents() if events is None else events

    def __len__(self) -> int:
        # The entities of the shared events: each view of a udf group gets every event of the group.
        return len(self.events)

    @abstractmethod
    def decode(self, blob: bytes | None) -> Any:
        """The state stored as `blob` (None: the key holds none yet), as `update` takes it."""

    @abstractmethod
    def update(self, entity: Entity, stored: StoredState) -> tuple[Any, bytes, dict[int, int]] | None:
        """Apply the entity's events past `stored.applied` to `stored.state`, in place: the new state, its
        encoding and the last offset applied per partition; None when every event was applied before."""

    def offset_field(self, partition: int) -> str:
        return offset_field(self.topic, partition)

    def read_fields(self, entity: Entity) -> list[str]:
        return ["v", "s", *(self.offset_field(p) for p in self.events.partitions(entity))]

    def stored(self, entity: Entity, read: list[bytes | None]) -> StoredState:
        """The reply to HMGET of `read_fields(entity)`, parsed."""
        version, blob, *offsets = read
        if version is None and any(o is not None for o in offsets):  # this layout writes all three together
            raise OldLayoutError(f"{self.key(entity)} holds fences but no state version: it was written by an older "
                                 "featurestream layout. Stop the stream materializers and run `featurestream rebuild` "
                                 "to recompute the views from the event log.")
        applied = {p: int(o) if o is not None else -1 for p, o in zip(self.events.partitions(entity), offsets, strict=True)}
        return StoredState(version.decode() if version is not None else "", self.decode(blob), applied)


def last_offsets(events: list[Event]) -> dict[int, int]:
    """The last offset of each partition among events in arrival order: the fences their write records."""
    return {partition: offset for partition, offset, _, _ in events}
