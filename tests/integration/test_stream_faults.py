"""Dead letters, crash safety (kill -9) and scale-out of the stream materializer, through its CLI."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import redis
from confluent_kafka import Consumer

from featurestream.definitions import StreamViewSpec, load_repo
from featurestream.online.keys import state_key
from materializers.stream.runner import StreamMaterializer, StreamOptions
from tests.conftest import CLI, run_cli
from tests.streams import create_topic, encode, iso, mismatches, produce, random_stream, reference_events, retarget

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
HOUR = 3_600_000
START = 1_795_000_000_000


def read_dead_letters(bootstrap: str, topic: str, expected: int, timeout_s: float = 60) -> list[dict[str, str]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"dlq-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([f"{topic}.dlq"])
    letters: list[dict[str, str]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(letters) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            headers = {k: v.decode() for k, v in (msg.headers() or [])}
            headers["value"] = (msg.value() or b"").decode("utf-8", "replace")
            letters.append(headers)
        end = time.monotonic() + 2  # nothing more than expected may arrive
        while time.monotonic() < end:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                letters.append({"unexpected": (msg.value() or b"").decode("utf-8", "replace")})
    finally:
        consumer.close()
    return letters


MALFORMED = [
    (b'{"event_id": "x1", "user_id": 1, "ite', "undecodable"),
    (b"\xff\xfe\x00\x01 not text", "undecodable"),
    (b'{"event_id": "caf\xe9", "user_id": 1, "item_id": 2, "event_timestamp": "2026-11-26T10:00:00Z"}', "undecodable"),
    (b'{"event_id": "x2", "item_id": 2, "event_type": "view", "event_timestamp": "2026-11-26T10:00:00Z"}', "missing_key"),
    (b'{"event_id": "x3", "user_id": 1, "item_id": 2, "event_type": "view"}', "missing_timestamp"),
    (b'{"event_id": "x4", "user_id": "abc", "item_id": 2, "event_timestamp": "2026-11-26T10:00:00Z"}', "wrong_type"),
    (b'{"event_id": "x5", "user_id": 1, "item_id": 2, "price": "cheap", "event_timestamp": "2026-11-26T10:00:00Z"}',
     "wrong_type"),
    (b'{"event_id": "x6", "user_id": 1, "item_id": 2, "event_timestamp": "soon"}', "bad_timestamp"),
    (b'{"event_id": "x7", "user_id": 1, "item_id": 2, "event_timestamp": "2999-01-01T00:00:00Z"}', "bad_timestamp"),
]


def test_bad_and_late_records_go_to_the_dlq_and_the_rest_is_applied(
        tmp_path: Path, redis_client: redis.Redis, kafka_bootstrap: str, topic_name: str) -> None:
    rng = random.Random(7)
    create_topic(kafka_bootstrap, topic_name, 1)
    views = retarget(topic_name, tmp_path / "log")
    lateness = views[0].source.lateness_ms
    events = random_stream(rng, 400, users=5, items=3, start_ms=START, span_ms=2 * HOUR, lateness_ms=lateness,
                           late_fraction=0.05)
    records = encode(events)
    positions = sorted(rng.sample(range(len(records)), len(MALFORMED)))
    bad_at = {}
    for shift, (position, (record, reason)) in enumerate(zip(positions, MALFORMED, strict=True)):
        records.insert(position + shift, record)
        bad_at[position + shift] = reason
    placements = produce(kafka_bootstrap, topic_name, records, [None] * len(records))
    project = f"t{uuid.uuid4().hex[:8]}"
    StreamMaterializer(project, views, redis_client, StreamOptions(
        group=f"g-{topic_name}", kafka_config={"bootstrap.servers": kafka_bootstrap}, idle_exit_s=2.0)).run()

    good_placements = [p for i, p in enumerate(placements) if i not in bad_at]
    accepted, late = reference_events(events, good_placements, lateness)
    assert len(late) >= 5
    letters = read_dead_letters(kafka_bootstrap, topic_name, len(MALFORMED) + len(late))
    assert not [letter for letter in letters if "unexpected" in letter]
    by_offset = {int(letter["original_offset"]): letter for letter in letters}
    assert len(by_offset) == len(letters) == len(MALFORMED) + len(late)
    for index, reason in bad_at.items():
        letter = by_offset[placements[index][1]]
        assert letter["reason"] == reason, letter
        assert letter["original_topic"] == topic_name and letter["original_partition"] == "0"
        assert letter["error"]
    for event in late:
        assert by_offset[event["offset"]]["reason"] == "late"
    newest = max(e["ts"] for e in accepted)
    assert mismatches(redis_client, project, views, accepted, [newest, newest + 10 * 60_000]) == []


@pytest.fixture
def stream_repo(repo_copy: Path, topic_name: str) -> Iterator[tuple[Path, dict[str, str]]]:
    """The demo repo reading `topic_name`, under a private project, applied with feast."""
    project = f"t{uuid.uuid4().hex[:8]}"
    source = repo_copy / "stream_features.py"
    source.write_text(source.read_text().replace('topic="clicks"', f'topic="{topic_name}"'))
    config = repo_copy / "feature_store.yaml"
    config.write_text(re.sub(r"^project: .*$", f"project: {project}", config.read_text(), flags=re.M))
    env = {"FEATURESTREAM_REPO": str(repo_copy)}
    applied = run_cli("apply", env=env)
    assert applied.returncode == 0, applied.stderr
    yield repo_copy, env


def _materializer(env: dict[str, str], *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([CLI, "materialize", "stream", "--metrics-port", "0", *extra],
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _assert_exits_cleanly(proc: subprocess.Popen[bytes]) -> None:
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr.decode()[-2000:]


def _produce_random(kafka_bootstrap: str, topic: str, views: list[StreamViewSpec], n: int, seed: int,
                    partitions: int) -> tuple[list[dict], list[dict]]:
    create_topic(kafka_bootstrap, topic, partitions)
    lateness = views[0].source.lateness_ms
    events = random_stream(random.Random(seed), n, users=40, items=15, start_ms=START, span_ms=6 * HOUR,
                           lateness_ms=lateness)
    placements = produce(kafka_bootstrap, topic, encode(events), [str(e["user_id"]).encode() for e in events])
    return reference_events(events, placements, lateness)


def _check(redis_client: redis.Redis, repo: Path, accepted: list[dict]) -> None:
    specs = load_repo(repo)
    views = list(specs.stream_views.values())
    newest = max(e["ts"] for e in accepted)
    assert mismatches(redis_client, specs.project, views, accepted, [newest, newest + 25 * 60_000]) == []
    log_dir = Path(views[0].source.event_log_path or "")
    logged = pq.read_table(log_dir).to_pylist()
    offsets = [(r["_partition"], r["_offset"]) for r in logged]
    assert len(offsets) == len(set(offsets)), "an event was logged twice"
    assert sorted(offsets) == sorted((e["partition"], e["offset"]) for e in accepted)


def test_kill_9_at_random_points_loses_and_doubles_nothing(stream_repo: tuple[Path, dict[str, str]],
                                                           redis_client: redis.Redis, kafka_bootstrap: str,
                                                           topic_name: str) -> None:
    repo, env = stream_repo
    views = list(load_repo(repo).stream_views.values())
    accepted, _ = _produce_random(kafka_bootstrap, topic_name, views, 30_000, seed=11, partitions=3)
    rng = random.Random(5)
    kills = 0
    for _ in range(5):
        proc = _materializer(env, "--batch-size", str(rng.choice([50, 200, 1000])), "--flush-interval", "0.2")
        time.sleep(rng.uniform(2.0, 4.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(30)
    assert kills >= 3
    _assert_exits_cleanly(_materializer(env, "--idle-exit", "3"))
    _check(redis_client, repo, accepted)


def test_two_processes_in_one_group_give_the_state_of_one(stream_repo: tuple[Path, dict[str, str]],
                                                           redis_client: redis.Redis, kafka_bootstrap: str,
                                                           topic_name: str) -> None:
    repo, env = stream_repo
    views = list(load_repo(repo).stream_views.values())
    accepted, _ = _produce_random(kafka_bootstrap, topic_name, views, 8_000, seed=12, partitions=4)
    first = _materializer(env, "--idle-exit", "6", "--batch-size", "100")
    second = _materializer(env, "--idle-exit", "6", "--batch-size", "100")
    for proc in (first, second):
        _assert_exits_cleanly(proc)
    _check(redis_client, repo, accepted)


def test_sigterm_finishes_commits_and_exits_0(stream_repo: tuple[Path, dict[str, str]], kafka_bootstrap: str,
                                              redis_client: redis.Redis, topic_name: str) -> None:
    repo, env = stream_repo
    create_topic(kafka_bootstrap, topic_name, 1)
    produce(kafka_bootstrap, topic_name, [b'{"event_id":"a","user_id":1,"item_id":1,"event_type":"view",'
                                          b'"price":1.0,"event_timestamp":"' + iso(START).encode() + b'"}'], [None])
    proc = _materializer(env)
    key = state_key(load_repo(repo).project, "user_activity", ("user_id",), (1,))
    deadline = time.monotonic() + 60
    while not redis_client.exists(key) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert redis_client.exists(key), "the event was not applied"
    proc.send_signal(signal.SIGTERM)
    _assert_exits_cleanly(proc)
    group = f"featurestream-{load_repo(repo).project}"
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    try:
        from confluent_kafka import TopicPartition

        committed = consumer.committed([TopicPartition(topic_name, 0)], timeout=30)
        assert committed[0].offset == 1
    finally:
        consumer.close()
    counts = Counter(p.suffix for p in Path(load_repo(repo).stream_views["user_activity"].source.event_log_path or "")
                     .iterdir())
    assert counts[".parquet"] == 1
