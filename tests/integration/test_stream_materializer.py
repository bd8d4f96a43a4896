"""The stream materializer against real Kafka and Redis, judged by a brute-force reference."""

from __future__ import annotations

import random
import uuid
from concurrent.futures import Future
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import redis
from confluent_kafka import KafkaException

from featurestream.definitions import StreamViewSpec
from materializers.stream.progress import PartitionProgress, ProgressStore
from materializers.stream.runner import StreamMaterializer, StreamOptions
from materializers.stream.source import SourcePipeline
from tests.streams import (
    FakeMessage, create_topic, encode, mismatches, price_stats_view, produce, random_stream, reference_events, retarget,
)

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
HOUR = 3_600_000


def run_until_idle(project: str, views: list[StreamViewSpec], client: redis.Redis, bootstrap: str,
                   group: str, **options: object) -> StreamMaterializer:
    materializer = StreamMaterializer(project, views, client, StreamOptions(
        group=group, kafka_config={"bootstrap.servers": bootstrap}, idle_exit_s=2.0, **options))
    materializer.run()
    return materializer


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_windows_and_sessions_equal_the_reference(seed: int, tmp_path: Path, redis_client: redis.Redis,
                                                  kafka_bootstrap: str, topic_name: str) -> None:
    rng = random.Random(seed)
    create_topic(kafka_bootstrap, topic_name, 3)
    views = retarget(topic_name, tmp_path / "log")
    views.append(price_stats_view(next(v for v in views if v.name == "user_activity")))
    lateness = views[0].source.lateness_ms
    start = 1_795_000_000_000
    events = random_stream(rng, 900, users=12, items=6, start_ms=start, span_ms=5 * HOUR, lateness_ms=lateness)
    placements = produce(kafka_bootstrap, topic_name, encode(events), [str(e["user_id"]).encode() for e in events])
    project = f"t{uuid.uuid4().hex[:8]}"
    run_until_idle(project, views, redis_client, kafka_bootstrap, f"g-{topic_name}", batch_size=rng.choice([7, 100, 5000]))

    accepted, late = reference_events(events, placements, lateness)
    assert late, "the stream should hold late events"
    newest = max(e["ts"] for e in accepted)
    times = [newest, newest + 1, newest + 59_999, newest + 20 * 60_000, newest + 31 * 60_000, newest + 23 * HOUR]
    assert mismatches(redis_client, project, views, accepted, times) == []

    logged = pq.read_table(tmp_path / "log").to_pylist()
    assert sorted((r["_partition"], r["_offset"]) for r in logged) == sorted(
        (e["partition"], e["offset"]) for e in accepted)


def test_old_tiles_are_dropped_and_keys_expire(tmp_path: Path, redis_client: redis.Redis, kafka_bootstrap: str,
                                               topic_name: str) -> None:
    from featurestream.online.keys import state_key
    from featurestream.online.series import decode_tiles, series_retention_ms, view_series

    create_topic(kafka_bootstrap, topic_name, 1)
    views = retarget(topic_name, tmp_path / "log")
    activity = next(v for v in views if v.name == "user_activity")
    events = random_stream(random.Random(9), 600, users=3, items=3, start_ms=1_795_000_000_000,
                           span_ms=30 * HOUR, lateness_ms=activity.source.lateness_ms, late_fraction=0.0)
    placements = produce(kafka_bootstrap, topic_name, encode(events), [None] * len(events))
    project = f"t{uuid.uuid4().hex[:8]}"
    run_until_idle(project, views, redis_client, kafka_bootstrap, f"g-{topic_name}", batch_size=20)

    accepted, _ = reference_events(events, placements, activity.source.lateness_ms)
    retention = series_retention_ms(activity)
    for user in {e["user_id"] for e in accepted}:
        key = state_key(project, activity.name, activity.join_keys, (user,))
        newest = max(e["ts"] for e in accepted if e["user_id"] == user)
        state = decode_tiles(redis_client.hget(key, "s"))
        assert state, "the user should have tiles"
        for series in view_series(activity):
            starts = state.get(series.name, [])[::series.stride]
            oldest_allowed = newest - retention[f"{series.column}|{series.slide_ms}"] - series.slide_ms
            assert not starts or min(starts) > oldest_allowed, f"{series.name} keeps tiles past its retention"
        assert 0 < redis_client.pttl(key) <= 25 * HOUR + 2 * HOUR
    assert mismatches(redis_client, project, views, accepted, [max(e["ts"] for e in accepted)]) == []


ROW = {"event_id": "e", "user_id": 1, "item_id": 2, "event_type": "view", "price": 1.0, "event_timestamp": 0}


def _idle_materializer(tmp_path: Path, client: redis.Redis, bootstrap: str,
                       topic: str) -> tuple[StreamMaterializer, SourcePipeline, str]:
    """A materializer that never consumes (its flushes are driven by hand), its pipeline and its project; the
    event log goes to tmp_path/log."""
    project = f"t{uuid.uuid4().hex[:8]}"
    materializer = StreamMaterializer(project, retarget(topic, tmp_path / "log"), client, StreamOptions(
        group="g", kafka_config={"bootstrap.servers": bootstrap}))
    return materializer, materializer.pipelines[topic], project


def test_a_flush_in_the_background_makes_nothing_durable_before_redis_holds_the_batch(
        tmp_path: Path, redis_client: redis.Redis, kafka_bootstrap: str, topic_name: str) -> None:
    """Progress and event-log files wait for the micro-batch last handed to the writer; events handled after the
    flush was taken go to the next one; a failed write stops every later flush."""
    materializer, pipeline, project = _idle_materializer(tmp_path, redis_client, kafka_bootstrap, topic_name)
    progress = pipeline.partitions[0] = PartitionProgress(offset=41, max_ts=1_000)
    assert pipeline.event_log is not None
    pipeline.event_log.buffers.append(0, 41, ROW, 1_000)
    store = ProgressStore(redis_client, project, "g")

    writing: Future[None] = Future()
    materializer._writing = writing  # the writer is still applying the last micro-batch
    materializer._flush_in_background()
    progress.offset = 42  # handled after the flush was taken: not part of it
    pipeline.event_log.buffers.append(0, 42, ROW, 1_001)
    flushing = materializer._flushing
    assert flushing is not None
    with pytest.raises(TimeoutError):
        flushing.result(timeout=0.5)
    assert store.load(topic_name, [0]) == {} and not list((tmp_path / "log").glob("*.parquet"))

    writing.set_result(None)
    flushing.result(timeout=10)
    assert store.load(topic_name, [0]) == {0: PartitionProgress(41, 1_000)}
    assert [r["_offset"] for r in pq.read_table(tmp_path / "log").to_pylist()] == [41]

    failed: Future[None] = Future()
    failed.set_exception(ConnectionError("Redis went away"))
    materializer._writing = failed
    materializer._flush_in_background()
    materializer._writing = None  # later micro-batches reached Redis
    with pytest.raises(ConnectionError):
        materializer._flush_in_background()  # the failed flush is reported before another is taken
    with pytest.raises(RuntimeError, match="not committed"):  # and a materializer that failed never commits again
        materializer.flush()
    assert store.load(topic_name, [0]) == {0: PartitionProgress(41, 1_000)}
    assert [r["_offset"] for r in pq.read_table(tmp_path / "log").to_pylist()] == [41]


def test_a_failed_flush_in_place_stops_every_later_flush(tmp_path: Path, redis_client: redis.Redis,
                                                         kafka_bootstrap: str, topic_name: str) -> None:
    """Events the event log failed to take are lost to it: no later progress may be recorded past them."""
    materializer, pipeline, project = _idle_materializer(tmp_path, redis_client, kafka_bootstrap, topic_name)
    assert pipeline.event_log is not None
    pipeline.partitions[0] = PartitionProgress(offset=7, max_ts=1_000)
    pipeline.event_log.buffers.append(0, 7, ROW, 1_000)

    def disk_full(_: object) -> None:
        raise OSError(28, "No space left on device")

    pipeline.event_log.write = disk_full  # type: ignore[method-assign]
    with pytest.raises(OSError):
        materializer.flush()
    del pipeline.event_log.write
    pipeline.partitions[0].offset = 8
    pipeline.event_log.buffers.append(0, 8, ROW, 1_001)
    with pytest.raises(RuntimeError, match="not committed"):
        materializer.flush()
    assert ProgressStore(redis_client, project, "g").load(topic_name, [0]) == {}
    assert not list((tmp_path / "log").glob("*.parquet"))


def test_a_micro_batch_that_fails_midway_is_never_made_durable(tmp_path: Path, redis_client: redis.Redis,
                                                               kafka_bootstrap: str, topic_name: str) -> None:
    """Handling advanced the progress and the event log past what the writer got (here a dead letter could not
    be queued): the shutdown flush must not record them (they would never reach Redis)."""
    materializer, _, project = _idle_materializer(tmp_path, redis_client, kafka_bootstrap, topic_name)
    event = b'{"event_id":"e","user_id":1,"item_id":2,"event_type":"view","price":1.0,"event_timestamp":1795000000000}'
    malformed = b'{"user_id": "not a number"}'

    def queue_full(*args: object) -> None:
        raise BufferError("Local: Queue full")

    materializer.dead_letters.send = queue_full  # type: ignore[method-assign]
    with pytest.raises(BufferError):
        materializer._process([FakeMessage(topic_name, 0, offset, malformed if offset == 2 else event)
                               for offset in range(4)])
    with pytest.raises(RuntimeError, match="not committed"):
        materializer.flush()
    assert ProgressStore(redis_client, project, "g").load(topic_name, [0]) == {}
    assert not list((tmp_path / "log").glob("*.parquet"))


class _KafkaError:
    def __init__(self, fatal: bool) -> None:
        self._fatal = fatal

    def fatal(self) -> bool:
        return self._fatal

    def __str__(self) -> str:
        return "Broker: a test error"


def test_kafka_errors_in_a_batch_are_skipped_unless_fatal(tmp_path: Path, redis_client: redis.Redis,
                                                         kafka_bootstrap: str, topic_name: str) -> None:
    materializer, pipeline, _ = _idle_materializer(tmp_path, redis_client, kafka_bootstrap, topic_name)
    event = b'{"event_id":"e","user_id":1,"item_id":2,"event_type":"view","price":1.0,"event_timestamp":1795000000000}'
    messages = [FakeMessage(topic_name, 0, 0, event), FakeMessage(topic_name, 0, -1, None, _KafkaError(False)),
                FakeMessage(topic_name, 0, 1, event), FakeMessage(topic_name, 0, -1, None, _KafkaError(False))]
    materializer._process(messages)
    materializer._wait_for_writer()
    assert materializer._pending_events == 2 and pipeline.partitions[0].offset == 1
    with pytest.raises(KafkaException, match="a test error"):
        materializer._process([FakeMessage(topic_name, 0, 2, event), FakeMessage(topic_name, 0, -1, None, _KafkaError(True))])
