"""Everything the materializer does for one Kafka source: decode, watermark, udf, dispatch to views.

The per-record path is native (`native/src/router.rs`), one `Router` per micro-batch:
per record, a watermark check against its partition's progress (late records are
dead-lettered), every udf, then the event log and the events of the views the udf
feeds, so a record refused by a udf leaves no trace. The consumer hands it whole
micro-batches (`route`), the rebuild decoded rows (`apply`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from featurestream_native import EntityEvents, Router

from featurestream.definitions import StreamSourceSpec, StreamViewSpec
from materializers.stream.decode import Decoder
from materializers.stream.event_log import EventLogWriter
from materializers.stream.progress import PartitionProgress
from materializers.stream.session_batch import SessionBatch
from materializers.stream.state_batch import value_needs
from materializers.stream.tile_batch import TileBatch


Udf = Callable[[dict[str, Any]], dict[str, Any]]


class SourcePipeline:
    """Per-source state (partitions' progress, buffers) and the per-record path through it."""

    def __init__(self, project: str, source: StreamSourceSpec, views: list[StreamViewSpec],
                 event_log_dir: Path | None) -> None:
        self.project = project
        self.source = source
        self.topic = source.topic
        self.views = views
        keys = tuple(dict.fromkeys(k for v in views for k in v.join_keys))
        self.decoder = Decoder(source.schema, source.timestamp_field, keys)
        self.lateness_ms = source.lateness_ms
        self.partitions: dict[int, PartitionProgress] = {}
        self.event_log = EventLogWriter(source, event_log_dir) if event_log_dir else None
        # Views sharing a udf object share its output: it runs once per event; of those, views keyed alike
        # share the events, which keep the columns any of them reads.
        groups: dict[int, tuple[Udf | None, dict[tuple[str, ...], list[StreamViewSpec]]]] = {}
        for view in views:
            groups.setdefault(id(view.udf), (view.udf, {}))[1].setdefault(view.join_keys, []).append(view)
        self._layout = [(udf, [(list(keys), _columns(keyed), _needs(keyed), keyed)
                               for keys, keyed in by_keys.items()])
                        for udf, by_keys in groups.values()]
        self._newest_before = 0
        self.new_batch()

    @property
    def newest_ts(self) -> int:
        """The newest event time accepted so far (0: none yet)."""
        return max(self._newest_before, self.router.newest)

    def new_batch(self) -> None:
        """Fresh view batches; the filled ones belong to whoever writes them to Redis."""
        self.tiles: dict[str, TileBatch] = {}
        self.sessions: dict[str, SessionBatch] = {}
        groups = []
        for udf, sinks in self._layout:
            shared = []
            for keys, columns, needs, keyed in sinks:
                events = EntityEvents(columns, *needs)
                for view in keyed:
                    batches = self.sessions if view.is_session else self.tiles
                    batches[view.name] = _batch_type(view)(self.project, view, events)
                shared.append((keys, events))
            groups.append((udf, shared))
        self.router = Router(self.decoder, self.lateness_ms, groups,
                             self.event_log.buffers if self.event_log is not None else None)

    def take_batches(self) -> tuple[list[TileBatch], list[SessionBatch]]:
        """The micro-batch's non-empty view batches, handed over; the pipeline starts a new micro-batch."""
        filled = [b for b in self.tiles.values() if len(b)], [b for b in self.sessions.values() if len(b)]
        self._newest_before = self.newest_ts
        self.new_batch()
        return filled

    def apply(self, progress: PartitionProgress, partition: int, offset: int, row: dict[str, Any],
              ts_ms: int) -> tuple[str, str] | None:
        """Apply one decoded row (the event log's during a rebuild); None when accepted."""
        return self.router.apply(progress, partition, offset, row, ts_ms)


def _columns(views: list[StreamViewSpec]) -> list[str]:
    """The udf-output columns the views read (their batches' events keep only those)."""
    return list(dict.fromkeys(c for v in views for c in _batch_type(v).columns(v)))


def _needs(views: list[StreamViewSpec]) -> tuple[list[str], list[str]]:
    """The columns any of the views adds up, and those any takes a min or max of (see `value_needs`)."""
    needs = [value_needs(v) for v in views]
    return list(dict.fromkeys(c for numeric, _ in needs for c in numeric)), \
        list(dict.fromkeys(c for _, ordered in needs for c in ordered))


def _batch_type(view: StreamViewSpec) -> type[TileBatch] | type[SessionBatch]:
    return SessionBatch if view.is_session else TileBatch


def views_by_topic(views: list[StreamViewSpec]) -> dict[str, list[StreamViewSpec]]:
    """The views grouped by their source's topic: one pipeline per topic."""
    by_topic: dict[str, list[StreamViewSpec]] = {}
    for view in views:
        by_topic.setdefault(view.source.topic, []).append(view)
    return by_topic

