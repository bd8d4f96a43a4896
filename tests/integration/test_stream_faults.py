"""Crash safety (kill -9), scale-out and shutdown of the stream materializer, through its CLI."""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, TopicPartition

from featurestream.definitions import load_repo
from featurestream.online.keys import state_key
from tests.streams import (START, assert_exits_cleanly, check_state, create_topic, iso,
                           produce, produce_random, run_materializer)

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def test_kill_9_at_random_points_loses_and_doubles_nothing(stream_repo: tuple[Path, dict[str, str]],
                                                           redis_client: redis.Redis, kafka_bootstrap: str,
                                                           topic_name: str) -> None:
    repo, env = stream_repo
    views = list(load_repo(repo).stream_views.values())
    accepted, _ = produce_random(kafka_bootstrap, topic_name, views, 30_000, seed=11, partitions=3)
    rng = random.Random(5)
    kills = 0
    for _ in range(5):
        proc = run_materializer(env, "--batch-size", str(rng.choice([50, 200, 1000])), "--flush-interval", "0.2")
        time.sleep(rng.uniform(2.0, 4.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(30)
    assert kills >= 3
    assert_exits_cleanly(run_materializer(env, "--idle-exit", "3"))
    check_state(redis_client, repo, accepted)


def test_two_processes_in_one_group_give_the_state_of_one(stream_repo: tuple[Path, dict[str, str]],
                                                           redis_client: redis.Redis, kafka_bootstrap: str,
                                                           topic_name: str) -> None:
    repo, env = stream_repo
    views = list(load_repo(repo).stream_views.values())
    accepted, _ = produce_random(kafka_bootstrap, topic_name, views, 8_000, seed=12, partitions=4)
    first = run_materializer(env, "--idle-exit", "6", "--batch-size", "100")
    second = run_materializer(env, "--idle-exit", "6", "--batch-size", "100")
    for proc in (first, second):
        assert_exits_cleanly(proc)
    check_state(redis_client, repo, accepted)


def test_sigterm_finishes_commits_and_exits_0(stream_repo: tuple[Path, dict[str, str]], kafka_bootstrap: str,
                                              redis_client: redis.Redis, topic_name: str) -> None:
    repo, env = stream_repo
    create_topic(kafka_bootstrap, topic_name, 1)
    produce(kafka_bootstrap, topic_name, [b'{"event_id":"a","user_id":1,"item_id":1,"event_type":"view",'
                                          b'"price":1.0,"event_timestamp":"' + iso(START).encode() + b'"}'], [None])
    proc = run_materializer(env)
    key = state_key(load_repo(repo).project, "user_activity", ("user_id",), (1,))
    deadline = time.monotonic() + 60
    while not redis_client.exists(key) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert redis_client.exists(key), "the event was not applied"
    proc.send_signal(signal.SIGTERM)
    assert_exits_cleanly(proc)
    group = f"featurestream-{load_repo(repo).project}"
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    try:
        committed = consumer.committed([TopicPartition(topic_name, 0)], timeout=30)
        assert committed[0].offset == 1
    finally:
        consumer.close()
    counts = Counter(p.suffix for p in Path(load_repo(repo).stream_views["user_activity"].source.event_log_path or "")
                     .iterdir())
    assert counts[".parquet"] == 1
