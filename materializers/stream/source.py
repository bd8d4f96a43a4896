"""Everything the materializer does for one Kafka source: decode, watermark, udf, dispatch to views."""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter
from pathlib import Path
from typing import Any

from featurestream_native import EntityEvents

from featurestream.definitions import StreamSourceSpec, StreamViewSpec
from materializers.stream.decode import LATE, Decoder, Rejected
from materializers.stream.event_log import EventLogWriter
from materializers.stream.progress import PartitionProgress
from materializers.stream.session_batch import SessionBatch
from materializers.stream.tile_batch import TileBatch

UDF_ERROR = "udf_error"


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
        # Views sharing a udf object share its output: it runs once per event.
        groups: dict[int, tuple[Callable[[dict[str, Any]], dict[str, Any]] | None, list[StreamViewSpec]]] = {}
        for view in views:
            groups.setdefault(id(view.udf), (view.udf, []))[1].append(view)
        self._udf_groups = list(groups.values())
        self.newest_ts = 0
        self.new_batch()

    def new_batch(self) -> None:
        """Fresh view batches; the filled ones belong to whoever writes them to Redis."""
        self.tiles: dict[str, TileBatch] = {}
        self.sessions: dict[str, SessionBatch] = {}
        # Per udf group: (entity key getter, `add` of the events its views keyed so share), resolved once per
        # batch, not per event.
        self._sinks = []
        for _, views in self._udf_groups:
            by_keys: dict[tuple[str, ...], EntityEvents] = {}
            for view in views:
                events = by_keys.setdefault(view.join_keys, EntityEvents())
                if view.is_session:
                    self.sessions[view.name] = SessionBatch(self.project, view, events)
                else:
                    self.tiles[view.name] = TileBatch(self.project, view, events)
            self._sinks.append([(_key_getter(keys), events.add) for keys, events in by_keys.items()])

    def take_batches(self) -> tuple[list[TileBatch], list[SessionBatch]]:
        """The micro-batch's non-empty view batches, handed over; the pipeline starts a new micro-batch."""
        filled = [b for b in self.tiles.values() if len(b)], [b for b in self.sessions.values() if len(b)]
        self.new_batch()
        return filled

    def handle(self, partition: int, offset: int, value: bytes | None, now_ms: int) -> tuple[str, str] | None:
        """Apply one record to the batch; returns (reason, detail) when it must be dead-lettered.

        `now_ms`: the wall clock, read once per micro-batch, that bounds plausible event times."""
        progress = self.partitions.get(partition)
        if progress is None:
            progress = self.partitions[partition] = PartitionProgress()
        progress.offset = offset
        try:
            row, ts_ms = self.decoder.decode(value, now_ms)
        except Rejected as rejected:
            return rejected.reason, rejected.detail
        return self.apply(progress, partition, offset, row, ts_ms)

    def apply(self, progress: PartitionProgress, partition: int, offset: int, row: dict[str, Any],
              ts_ms: int) -> tuple[str, str] | None:
        """Apply one decoded row (live records, or the event log's during a rebuild); None when accepted."""
        watermark = progress.max_ts - self.lateness_ms
        if ts_ms < watermark:
            return LATE, f"event time {ts_ms} ms is {watermark - ts_ms} ms behind the watermark {watermark}"
        derived = []
        for (udf, _), sinks in zip(self._udf_groups, self._sinks, strict=True):
            try:
                derived.append((udf(row) if udf is not None else row, sinks))
            except Exception as exc:  # a udf bug on one event must not stop the partition
                return UDF_ERROR, f"{type(exc).__name__}: {exc}"
        if ts_ms > progress.max_ts:
            progress.max_ts = ts_ms
        if ts_ms > self.newest_ts:
            self.newest_ts = ts_ms
        if self.event_log is not None:
            self.event_log.append(partition, offset, row, ts_ms)
        for out, sinks in derived:
            for entity_of, add in sinks:
                add(entity_of(out), partition, offset, ts_ms, out)
        return None


def views_by_topic(views: list[StreamViewSpec]) -> dict[str, list[StreamViewSpec]]:
    """The views grouped by their source's topic: one pipeline per topic."""
    by_topic: dict[str, list[StreamViewSpec]] = {}
    for view in views:
        by_topic.setdefault(view.source.topic, []).append(view)
    return by_topic


def _key_getter(join_keys: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """The entity key of a row as a tuple, whatever the number of join keys."""
    if len(join_keys) == 1:
        (only,) = join_keys
        return lambda row: (row[only],)
    getter = itemgetter(*join_keys)
    return lambda row: getter(row)
