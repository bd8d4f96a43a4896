"""What the Redis sink needs of one view's micro-batch: per entity, its key, its fences and its new state.

Every view keeps an entity's state in one encoded field (`s`) of the entity's hash.
It is updated in this process (by the native folds, from its cache of what it last
wrote, or read first) and written back by a compare-and-set on its version (`v`), together with
the last applied offset of each source partition. Events at or below their
partition's stored offset were applied before a crash or rebalance and are skipped,
so nothing counts twice, and no update needs Redis to run more than the check.
A micro-batch's events per entity are kept by the native `EntityEvents`
(`native/src/events.rs`), which views keyed alike and fed the same udf output
share, and which the native folds read: of each row, only the columns the views read.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from featurestream_native import EntityEvents

from featurestream.definitions import StreamViewSpec
from featurestream.definitions.specs import NUMERIC_FUNCTIONS
from featurestream.online.keys import offset_field
from materializers.stream.key_cache import cached_state_keys

EXPIRY_MARGIN_MS = 3_600_000
Entity = tuple[Any, ...]


class StateBatch(ABC):
    expiry_ms: int  # every written key expires this long after its last write

    def __init__(self, project: str, view: StreamViewSpec, events: EntityEvents | None = None) -> None:
        self.project = project
        self.view = view
        self.topic = view.source.topic
        self.key = cached_state_keys(project, view)
        self.events = EntityEvents(self.columns(view), *value_needs(view)) if events is None else events

    def __len__(self) -> int:
        # The entities of the shared events: each view of a udf group gets every event of the group.
        return len(self.events)

    @staticmethod
    @abstractmethod
    def columns(view: StreamViewSpec) -> list[str]:
        """The udf-output columns the view reads: what its events keep of each row."""

    @abstractmethod
    def decode(self, blob: bytes | None) -> Any:
        """The state stored as `blob` (None: the key holds none yet), as `update` takes it."""

    @abstractmethod
    def update(self, entity: Entity, state: Any, applied: dict[int, int]) -> tuple[bytes, dict[int, int]] | None:
        """Apply the entity's events past `applied` (partition -> last offset applied) to `state`, in place: the
        new state's encoding and the last offset applied per partition; None when every event was applied before."""

    def offset_field(self, partition: int) -> str:
        return offset_field(self.topic, partition)


def value_needs(view: StreamViewSpec) -> tuple[list[str], list[str]]:
    """The columns the view adds up (numbers only), and those it takes a min or max of (values that keep their
    type in the state's encoding): anything else there is the udf's error, refused as the record is routed."""
    numeric = [a.column for a in view.aggregations if a.function in NUMERIC_FUNCTIONS]
    ordered = [a.column for a in view.aggregations if a.function in ("min", "max")]
    return list(dict.fromkeys(numeric)), list(dict.fromkeys(ordered))
