"""The stream materializer against real Kafka and Redis, judged by a brute-force reference."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import redis

from featurestream.definitions import StreamViewSpec
from materializers.stream.runner import StreamMaterializer, StreamOptions
from tests.streams import create_topic, encode, mismatches, produce, random_stream, reference_events, retarget

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
