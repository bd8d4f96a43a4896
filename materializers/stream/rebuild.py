"""Recompute the streaming state in Redis from the event log, after Redis lost some or all of it.

The event log holds every accepted event once, with its partition and offset,
so feeding it through the same per-source path as live records (same udf,
watermark, tiles, sessions and fenced writes) gives the same state. The views'
old keys are deleted first: a key written after the loss carries fences newer
than the log's events and would refuse them. Progress is then set where the
live materializer must resume: after the log's last event, or after Kafka's
committed offset when that is further (the records in between were all dead
letters, which the log never holds).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import redis
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from featurestream.definitions import StreamViewSpec
from featurestream.event_log_files import LogFile, log_files
from featurestream.online.keys import view_key_pattern
from materializers.stream.progress import PartitionProgress, ProgressStore
from materializers.stream.redis_sink import RedisSink
from materializers.stream.source import SourcePipeline, views_by_topic

BATCH_EVENTS = 20_000
DELETE_CHUNK = 1_000


class RebuildError(RuntimeError):
    """Rebuilding now would lose or corrupt state; the message says why and what to do."""


@dataclass
class RebuildSummary:
    events: int = 0
    keys_deleted: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # reason -> events the log holds but the path refused
    resumed_at: dict[tuple[str, int], int] = field(default_factory=dict)  # (topic, partition) -> next offset
    seconds: float = 0.0


def rebuild(project: str, views: list[StreamViewSpec], client: redis.Redis, group: str,
            kafka_config: dict[str, Any], progress: Callable[[int], None] | None = None) -> RebuildSummary:
    """Delete the views' state and replay their event logs into Redis; returns what was done."""
    began = time.monotonic()
    _refuse_while_consuming(group, kafka_config)
    summary = RebuildSummary()
    plans = []
    for topic, topic_views in views_by_topic(views).items():
        source = topic_views[0].source
        if not source.event_log_path:
            raise RebuildError(f"source {source.name!r} has no event log (batch_source) to rebuild {topic} from")
        plans.append((topic, topic_views, _checked_files(Path(source.event_log_path), topic)))
    for view in views:
        summary.keys_deleted += delete_matching(client, view_key_pattern(project, view.name))
    sink = RedisSink(client)
    store = ProgressStore(client, project, group)
    for topic, topic_views, files in plans:
        pipeline = SourcePipeline(project, topic_views[0].source, topic_views, None)
        pending = 0
        for partition, offsets, rows, stamps in _read_interleaved(files, topic_views[0].source.timestamp_field):
            state = pipeline.partitions.setdefault(partition, PartitionProgress())
            for offset, row, ts_ms in zip(offsets, rows, stamps, strict=True):
                state.offset = offset
                refused = pipeline.apply(state, partition, offset, row, ts_ms)
                if refused is not None:
                    summary.refused[refused[0]] = summary.refused.get(refused[0], 0) + 1
            pending += len(rows)
            summary.events += len(rows)
            if pending >= BATCH_EVENTS:
                sink.write(*pipeline.take_batches())
                pending = 0
            if progress is not None:
                progress(summary.events)
        sink.write(*pipeline.take_batches())
        for partition, next_offset in _committed(group, kafka_config, topic).items():
            state = pipeline.partitions.setdefault(partition, PartitionProgress())
            state.offset = max(state.offset, next_offset - 1)
        store.save(topic, {p: s for p, s in pipeline.partitions.items() if s.offset >= 0})
        summary.resumed_at.update({(topic, p): s.offset + 1 for p, s in pipeline.partitions.items()})
    summary.seconds = time.monotonic() - began
    return summary


def count_events(views: list[StreamViewSpec]) -> int:
    """Events the rebuild will read (for a progress bar), from Parquet footers only."""
    sources = {v.source.topic: v.source for v in views}
    return sum(pq.read_metadata(f.path).num_rows for topic, source in sources.items()
               if source.event_log_path for f in log_files(Path(source.event_log_path), topic))


def _checked_files(directory: Path, topic: str) -> list[LogFile]:
    """The log's files; overlapping offset ranges would count events twice, so they stop the rebuild."""
    files = log_files(directory, topic)
    for before, after in zip(files, files[1:]):
        if before.partition == after.partition and after.first <= before.last:
            raise RebuildError(f"event log files overlap: {before.path.name} and {after.path.name}; "
                               "remove the stray one before rebuilding")
    return files


def _read_interleaved(files: list[LogFile], timestamp_field: str
                      ) -> Iterator[tuple[int, list[int], list[dict[str, Any]], list[int]]]:
    """(partition, offsets, rows, event times) file by file, partitions taken in turn as a consumer would."""
    queues: dict[int, list[LogFile]] = {}
    for file in files:
        queues.setdefault(file.partition, []).append(file)
    while queues:
        for partition in sorted(queues):
            file = queues[partition].pop(0)
            if not queues[partition]:
                del queues[partition]
            table = pq.read_table(file.path)
            columns = [c for c in table.column_names if not c.startswith("_")]
            stamps = table[timestamp_field].cast(pa.int64()).to_pylist()
            yield partition, table["_offset"].to_pylist(), table.select(columns).to_pylist(), stamps


def delete_matching(client: redis.Redis, pattern: str) -> int:
    """Unlink every key matching a SCAN pattern, a chunk at a time; how many there were."""
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=DELETE_CHUNK):
        batch.append(key)
        if len(batch) >= DELETE_CHUNK:
            deleted += _unlink(client, batch)
            batch = []
    return deleted + (_unlink(client, batch) if batch else 0)


def _unlink(client: redis.Redis, keys: list[bytes]) -> int:
    pipe = client.pipeline(transaction=False)
    for key in keys:  # one key per command, so it works on a cluster too
        pipe.unlink(key)
    return sum(pipe.execute())


def _refuse_while_consuming(group: str, kafka_config: dict[str, Any]) -> None:
    """A live consumer would keep writing while keys are deleted and rebuilt: refuse instead."""
    admin = AdminClient(kafka_config)
    try:
        description = admin.describe_consumer_groups([group], request_timeout=15)[group].result()
    except KafkaException as exc:
        raise RebuildError(f"cannot ask Kafka whether group {group!r} is consuming: {exc}") from None
    if description.members:
        hosts = ", ".join(sorted({m.host for m in description.members}))
        raise RebuildError(f"{len(description.members)} consumer(s) of group {group!r} are running ({hosts}); "
                           "stop the stream materializers first, then rebuild")


def _committed(group: str, kafka_config: dict[str, Any], topic: str) -> dict[int, int]:
    """Kafka's committed next offset per partition for the group (partitions without a commit left out)."""
    consumer = Consumer({**kafka_config, "group.id": group, "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(topic, timeout=15).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return {}
        asked = [TopicPartition(topic, p) for p in metadata.partitions]
        return {tp.partition: tp.offset for tp in consumer.committed(asked, timeout=15) if tp.offset >= 0}
    finally:
        consumer.close()
