"""The consumer loop: micro-batches from Kafka into Redis and the event log, exactly once.

Order of effects per flush: Redis state (every micro-batch) -> event-log files ->
dead letters acknowledged -> progress in Redis -> Kafka offsets committed.
A crash anywhere replays from the recorded progress; fenced Redis writes and
offset-named event-log files make the replay change nothing twice.

One writer thread applies micro-batches to Redis in order, one at a time, while
the main thread decodes the next: Redis's own work overlaps ours. A periodic flush
takes the event-log buffers and a copy of the progress, and a flusher thread makes
them durable once the writer has put every micro-batch before it in Redis, while
the main thread goes on consuming (writing the files held it up for tens of
milliseconds, which showed as freshness). The main thread commits the offsets of a
finished flush. Rebalances and shutdown wait for their flush. Any failure of the
writer or the flusher stops every later flush.
"""

from __future__ import annotations

import gc
import logging
import signal
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from featurestream_native import route

from featurestream.definitions import RepoSpecs, StreamViewSpec
from materializers.stream import metrics
from materializers.stream.collection import Collector
from materializers.stream.dead_letters import DeadLetters
from materializers.stream.group_watch import GroupWatch
from materializers.stream.progress import PartitionProgress, ProgressStore
from materializers.stream.redis_sink import RedisSink
from materializers.stream.session_batch import SessionBatch
from materializers.stream.source import SourcePipeline, views_by_topic
from materializers.stream.tile_batch import TileBatch

log = logging.getLogger(__name__)


@dataclass
class StreamOptions:
    group: str
    kafka_config: dict[str, Any] = field(default_factory=dict)  # bootstrap.servers, security settings
    # Records per micro-batch, at most: under backlog big batches share each key's Redis update
    # between more events; when caught up a batch holds what arrived within batch_timeout_s.
    batch_size: int = 100_000
    batch_timeout_s: float = 0.02
    flush_interval_s: float = 2.0
    flush_events: int = 200_000
    idle_exit_s: float | None = None  # stop after this long with nothing to read (tests, backfills)
    # A consumer whose group handler has not been "up" for this long is recreated (see group_watch).
    rejoin_after_s: float = 60.0
    event_log: bool = True


def select_views(specs: RepoSpecs, names: list[str] | None) -> list[StreamViewSpec]:
    if not names:
        return list(specs.stream_views.values())
    unknown = [n for n in names if n not in specs.stream_views]
    if unknown:
        raise ValueError(
            f"unknown stream feature view {', '.join(unknown)}; known: {', '.join(sorted(specs.stream_views))}"
        )
    return [specs.stream_views[n] for n in names]


class StreamMaterializer:
    def __init__(self, project: str, views: list[StreamViewSpec], client: redis.Redis, options: StreamOptions,
                 event_log_root: Callable[[StreamViewSpec], Path | None] | None = None) -> None:
        if not views:
            raise ValueError("no stream feature view to materialize")
        self.options = options
        self.client = client
        self.pipelines: dict[str, SourcePipeline] = {}
        for topic, topic_views in views_by_topic(views).items():
            source = topic_views[0].source
            log_dir = None
            if options.event_log and source.event_log_path:
                log_dir = event_log_root(topic_views[0]) if event_log_root else Path(source.event_log_path)
            self.pipelines[topic] = SourcePipeline(project, source, topic_views, log_dir)
        self.progress = ProgressStore(client, project, options.group)
        self.sink = RedisSink(client)
        self.dead_letters = DeadLetters(options.kafka_config)
        self._stopping = False
        self._pending_events = 0
        self._collector = Collector()
        self._last_flush = time.monotonic()
        self._consumer: Consumer | None = None
        self._watch = GroupWatch(options.rejoin_after_s)
        self._writer: ThreadPoolExecutor | None = None
        self._writing: Future[None] | None = None
        self._flusher: ThreadPoolExecutor | None = None
        self._flushing: Future[list[TopicPartition]] | None = None
        # A micro-batch may be missing from Redis, or events from the event log: never make offsets durable again.
        self._failed = False

    # -- lifecycle -----------------------------------------------------------------------------
    def stop(self, *_: Any) -> None:
        """Finish the current batch, flush, commit, and leave the loop (signal-handler safe)."""
        self._stopping = True

    def _connect(self) -> Consumer:
        """A consumer subscribed to the pipelines' topics, its group membership watched."""
        self._watch = GroupWatch(self.options.rejoin_after_s)
        consumer = Consumer({
            **self.options.kafka_config,
            "group.id": self.options.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 1_000,
            "fetch.wait.max.ms": 10,
            "fetch.min.bytes": 65536,
            "statistics.interval.ms": 1_000,
            "stats_cb": lambda stats: self._watch.observe(stats, time.monotonic()),
        })
        self._consumer = consumer
        consumer.subscribe(list(self.pipelines), on_assign=self._on_assign, on_revoke=self._on_revoke,
                           on_lost=self._on_lost)
        return consumer

    def _reconnect(self, consumer: Consumer) -> Consumer:
        """Replace a consumer wedged outside its group; its partitions count as lost (the next owner replays)."""
        log.warning("the Kafka consumer has been out of its group for %.0f s (state %s): recreating it",
                    self._watch.away_s(time.monotonic()), self._watch.state)
        metrics.CONSUMER_RESTARTS.inc()
        self._wait_for_writer()
        self._wait_for_flusher()
        self._forget({topic: set(p.partitions) for topic, p in self.pipelines.items()})
        consumer.close()
        return self._connect()

    def run(self) -> None:
        # No automatic GC passes while the loop runs: flushes freeze or collect (see `collection`).
        self._collector.collect_all()
        collecting = gc.isenabled()
        gc.disable()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                signal.signal(sig, self.stop)
            except ValueError:  # not the main thread (tests): the caller stops us
                pass
        consumer = self._connect()
        idle_since = time.monotonic()
        last_metrics = time.monotonic()
        try:
            while not self._stopping:
                messages = consumer.consume(self.options.batch_size, self.options.batch_timeout_s)
                now = time.monotonic()
                if messages:
                    self._process(messages)
                    idle_since = now
                elif self.options.idle_exit_s is not None and now - idle_since > self.options.idle_exit_s:
                    break
                if self._pending_events >= self.options.flush_events or now - self._last_flush >= self.options.flush_interval_s:
                    self._flush_in_background()
                if self._flushing is not None and self._flushing.done():
                    self._wait_for_flusher()  # commits its offsets
                if self._watch.wedged(now):
                    consumer = self._reconnect(consumer)
                    idle_since = time.monotonic()
                if now - last_metrics >= 1.0:
                    self._update_lag(consumer)
                    last_metrics = now
        finally:
            try:
                if not self._failed:
                    self.flush()
            finally:
                consumer.close()
                self._consumer = None
                for pool in (self._writer, self._flusher):
                    if pool is not None:
                        pool.shutdown()
                self._writer = self._flusher = None
                if collecting:
                    gc.enable()

    # -- the per-batch path --------------------------------------------------------------------
    def _process(self, messages: list[Any]) -> None:
        try:
            self._hand_over(messages)
        except BaseException:  # progress and the event log may be ahead of what the writer was given
            self._failed = True
            raise

    def _hand_over(self, messages: list[Any]) -> None:
        """Decode and route a micro-batch, then hand it to the writer thread."""
        began = time.perf_counter()
        handled = len(messages)
        now_ms = time.time_ns() // 1_000_000
        routes = [(topic, p.router, p.partitions) for topic, p in self.pipelines.items()]
        start = 0
        while start < len(messages):
            start, refused = route(messages, start, now_ms, routes, PartitionProgress)
            for message, reason, detail in refused:
                topic, partition, offset = message.topic(), message.partition(), message.offset()
                self.dead_letters.send(topic, partition, offset, message.key(), message.value(), reason, detail)
                metrics.DEAD_LETTERS.labels(topic, reason).inc()
            if start < len(messages):  # stopped at a message that carries a Kafka error
                error = messages[start].error()
                if error.fatal():
                    raise KafkaException(error)
                log.warning("Kafka: %s", error)
                handled -= 1
                start += 1
        for topic, pipeline in self.pipelines.items():
            metrics.EVENTS.labels(topic).inc(pipeline.router.accepted)
        newest = {p.topic: p.newest_ts for p in self.pipelines.values() if p.newest_ts}
        tiles: list[TileBatch] = []
        sessions: list[SessionBatch] = []
        for pipeline in self.pipelines.values():
            filled_tiles, filled_sessions = pipeline.take_batches()
            tiles += filled_tiles
            sessions += filled_sessions
        self._wait_for_writer()
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="redis-writer")
        self._writing = self._writer.submit(self._write, tiles, sessions, newest, began, handled)
        self._pending_events += handled

    def _write(self, tiles: list[TileBatch], sessions: list[SessionBatch], newest: dict[str, int],
               began: float, handled: int) -> None:
        """The writer thread's part of a micro-batch."""
        self.sink.write(tiles, sessions)
        for topic, newest_ts in newest.items():
            metrics.FRESHNESS.labels(topic).set(time.time() - newest_ts / 1000)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - began)
        metrics.BATCH_EVENTS.observe(handled)

    def _wait_for_writer(self) -> None:
        """Block until Redis holds every micro-batch handed over (re-raising the writer's error)."""
        writing, self._writing = self._writing, None
        self._settle(writing)

    def _wait_for_flusher(self, asynchronous: bool = True) -> None:
        """Block until the flush in flight is durable (re-raising its error, or the writer's it waited for), then
        commit its offsets to Kafka: here, not in the flusher, which a rebalance callback may be waiting for
        while the consumer waits for the callback."""
        flushing, self._flushing = self._flushing, None
        self._commit(self._settle(flushing), asynchronous)

    def _settle(self, pending: Future[Any] | None) -> Any:
        """The result of a writer's or flusher's work; after it failed, no offset is ever made durable again."""
        if pending is None:
            return None
        try:
            return pending.result()
        except BaseException:
            self._failed = True
            raise

    def _commit(self, offsets: list[TopicPartition] | None, asynchronous: bool) -> None:
        if offsets and self._consumer is not None:
            try:
                self._consumer.commit(offsets=offsets, asynchronous=asynchronous)
            except KafkaException as exc:  # progress in Redis is what we resume from; the commit is for lag tools
                log.warning("offset commit failed: %s", exc)

    def flush(self, only: dict[str, set[int]] | None = None) -> None:
        """Make everything handled so far durable before returning: event log, dead letters, progress, Kafka
        offsets (committed synchronously)."""
        self._flush_in_background(only)
        self._wait_for_flusher(asynchronous=False)

    def _flush_in_background(self, only: dict[str, set[int]] | None = None) -> None:
        """Make everything handled so far durable in the flusher thread, once the previous flush is."""
        self._wait_for_flusher()
        if self._flusher is None:
            self._flusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flusher")
        self._flushing = self._flusher.submit(self._durable(only))

    def _durable(self, only: dict[str, set[int]] | None) -> Callable[[], list[TopicPartition]]:
        """Take what a flush covers (event-log buffers, a copy of the progress) and return the work that makes
        it durable and then returns the offsets to commit; it first waits for the micro-batch last handed to the
        writer."""
        if self._failed:
            raise RuntimeError("a micro-batch failed to reach Redis or the event log; its offsets are not committed")
        elapsed = max(time.monotonic() - self._last_flush, 1e-6)
        metrics.EVENTS_PER_SECOND.set(self._pending_events / elapsed)
        writing = self._writing
        logs = []
        saves: dict[str, dict[int, PartitionProgress]] = {}
        commits = []
        for topic, pipeline in self.pipelines.items():
            partitions = set(pipeline.partitions) if only is None else only.get(topic, set()) & set(pipeline.partitions)
            if not partitions:
                continue
            if pipeline.event_log is not None:
                logs.append((pipeline.event_log, pipeline.event_log.take(partitions)))
            saves[topic] = {p: replace(pipeline.partitions[p]) for p in partitions if pipeline.partitions[p].offset >= 0}
            commits += [TopicPartition(topic, p, s.offset + 1) for p, s in saves[topic].items()]

        def durable() -> list[TopicPartition]:
            if writing is not None:
                writing.result()
            self.dead_letters.flush()
            for event_log, taken in logs:
                event_log.write(taken)
            for topic, progress in saves.items():
                self.progress.save(topic, progress)
            return commits

        self._pending_events = 0
        self._collector.flushed()
        self._last_flush = time.monotonic()
        return durable

    # -- rebalances ----------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._wait_for_flusher()  # its files must be in place before leftovers are removed
        by_topic: dict[str, list[TopicPartition]] = {}
        for tp in partitions:
            by_topic.setdefault(tp.topic, []).append(tp)
        committed = {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(partitions, timeout=30)}
        for topic, tps in by_topic.items():
            pipeline = self.pipelines[topic]
            stored = self.progress.load(topic, [tp.partition for tp in tps])
            for tp in tps:
                progress = stored.get(tp.partition)
                if progress is None:  # nothing recorded in Redis: Kafka's committed offset, else the beginning
                    kafka_offset = committed.get((topic, tp.partition), -1)
                    progress = PartitionProgress(offset=kafka_offset - 1 if kafka_offset >= 0 else -1)
                pipeline.partitions[tp.partition] = progress
                tp.offset = progress.offset + 1 if progress.offset >= 0 else OFFSET_BEGINNING
                if pipeline.event_log is not None:
                    pipeline.event_log.discard({tp.partition})
                    pipeline.event_log.remove_after(tp.partition, progress.offset)
        log.info("assigned %s", ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in partitions))
        consumer.assign(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked: dict[str, set[int]] = {}
        for tp in partitions:
            revoked.setdefault(tp.topic, set()).add(tp.partition)
        if not self._failed:  # after a failure nothing is made durable (and close() must not raise here)
            self.flush(revoked)
        self._forget(revoked)
        consumer.unassign()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions taken away without a chance to commit: drop unflushed work, the new owner replays it."""
        self._wait_for_flusher()
        lost: dict[str, set[int]] = {}
        for tp in partitions:
            lost.setdefault(tp.topic, set()).add(tp.partition)
        self._forget(lost)

    def _forget(self, partitions: dict[str, set[int]]) -> None:
        for topic, numbers in partitions.items():
            pipeline = self.pipelines[topic]
            if pipeline.event_log is not None:
                pipeline.event_log.discard(numbers)
            for number in numbers:
                pipeline.partitions.pop(number, None)

    def _update_lag(self, consumer: Consumer) -> None:
        for topic, pipeline in self.pipelines.items():
            for partition, progress in pipeline.partitions.items():
                try:
                    _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
                except KafkaException:
                    continue
                if high >= 0:
                    metrics.LAG.labels(topic, str(partition)).set(max(high - progress.offset - 1, 0))
