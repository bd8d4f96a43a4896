"""Helpers for integration tests of the stream materializer: retargeted specs, random streams, producing."""

from __future__ import annotations

import dataclasses
import os
import random
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson
import pyarrow.parquet as pq
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from featurestream.definitions import AggregationSpec, RepoSpecs, StreamViewSpec, check_repo, load_repo
from tests.conftest import CLI, FEATURE_REPO

MINUTE = 60_000
HOUR = 3_600_000
START = 1_795_000_000_000
# Functions the demo views do not use, over a column with nulls (price) and a udf-derived one.
EXTRA = (
    AggregationSpec("price_min_10m", "price", "min", 10 * MINUTE, MINUTE),
    AggregationSpec("price_var_1h", "price", "var", HOUR, 5 * MINUTE),
    AggregationSpec("price_stddev_1h", "price", "stddev", HOUR, 5 * MINUTE),
    AggregationSpec("price_mean_2h", "price", "mean", 2 * HOUR, 30 * MINUTE),
    AggregationSpec("purchase_last_1h", "purchase_value", "last", HOUR, MINUTE),
    AggregationSpec("purchase_count_1h", "purchase_id", "count", HOUR, MINUTE),
)

_DEMO_SPECS: RepoSpecs | None = None


def demo_specs() -> RepoSpecs:
    global _DEMO_SPECS
    if _DEMO_SPECS is None:
        _DEMO_SPECS = check_repo(FEATURE_REPO)
    return _DEMO_SPECS


def retarget(topic: str, event_log: Path) -> list[StreamViewSpec]:
    """The demo's stream views, reading `topic` and logging to `event_log`."""
    views = []
    for view in demo_specs().stream_views.values():
        source = dataclasses.replace(view.source, topic=topic, event_log_path=str(event_log))
        views.append(dataclasses.replace(view, source=source))
    return views


def price_stats_view(activity: StreamViewSpec) -> StreamViewSpec:
    """A view like `activity` (same source, udf and entity) using every aggregation function the demo does not."""
    return dataclasses.replace(
        activity, name="price_stats", aggregations=EXTRA,
        feature_types={a.name: "Int64" if a.function == "count" else "Float64" for a in EXTRA})


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(30)


def epoch_ms(iso_time: str) -> int:
    stamp = datetime.fromisoformat(iso_time)
    return int(stamp.timestamp()) * 1000 + stamp.microsecond // 1000


def iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def random_stream(rng: random.Random, n: int, users: int, items: int, start_ms: int, span_ms: int,
                  lateness_ms: int, late_fraction: float = 0.02, disorder_fraction: float = 0.2) -> list[dict[str, Any]]:
    """Events in arrival order: mostly increasing times with bursts, disorder inside lateness, a few far-late ones."""
    events = []
    clock = start_ms
    for i in range(n):
        clock += int(rng.expovariate(n / span_ms))
        ts = clock
        roll = rng.random()
        if roll < late_fraction:
            ts = clock - lateness_ms * rng.randint(3, 20)
        elif roll < late_fraction + disorder_fraction:
            ts = clock - rng.randint(0, lateness_ms // 2)
        kind = rng.choice(["view", "view", "view", "click", "add_to_cart", "purchase"])
        price = None if rng.random() < 0.05 else round(rng.uniform(1, 500), 2)
        events.append({"event_id": f"e{i}-{uuid.uuid4().hex[:6]}", "user_id": rng.randint(1, users),
                       "item_id": rng.randint(1, items), "event_type": kind, "price": price,
                       "event_timestamp": iso(ts)})
    return events


def produce(bootstrap: str, topic: str, records: list[bytes], keys: list[bytes | None]) -> list[tuple[int, int]]:
    """Produce in order and return each record's (partition, offset)."""
    placed: list[tuple[int, int] | None] = [None] * len(records)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})

    def on_delivery(index: int) -> Any:
        def callback(err: Any, msg: Any) -> None:
            assert err is None, err
            placed[index] = (msg.partition(), msg.offset())
        return callback

    for index, (record, key) in enumerate(zip(records, keys, strict=True)):
        producer.produce(topic, value=record, key=key, on_delivery=on_delivery(index))
        if index % 1000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    assert all(p is not None for p in placed)
    return placed  # type: ignore[return-value]


def encode(events: list[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps(e) for e in events]


def reference_events(events: list[dict[str, Any]], placements: list[tuple[int, int]],
                     lateness_ms: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(accepted, late) events as the reference sees them: with ts, partition, offset and the udf's columns."""
    from tests.reference import ref_accepted

    udf = next(iter(demo_specs().stream_views.values())).udf
    assert udf is not None
    rows = []
    for event, (partition, offset) in zip(events, placements, strict=True):
        rows.append({**udf(dict(event)), "ts": epoch_ms(event["event_timestamp"]),
                     "partition": partition, "offset": offset})
    accepted = ref_accepted(rows, lateness_ms)
    kept = {(e["partition"], e["offset"]) for e in accepted}
    return accepted, [r for r in rows if (r["partition"], r["offset"]) not in kept]


def expected_features(view: StreamViewSpec, accepted: list[dict[str, Any]], entity: tuple[Any, ...],
                      t_ms: int) -> dict[str, Any]:
    from tests.reference import ref_session, ref_window

    mine = [e for e in accepted if tuple(e[k] for k in view.join_keys) == entity]
    if view.is_session:
        assert view.session_gap_ms is not None
        return ref_session(mine, view.session_gap_ms, {a.name: (a.column, a.function) for a in view.aggregations},
                           t_ms)
    return {a.name: ref_window(mine, a.function, a.window_ms, a.slide_ms, t_ms, column=a.column)
            for a in view.aggregations}


def actual_features(client: Any, project: str, view: StreamViewSpec, entity: tuple[Any, ...],
                    t_ms: int) -> dict[str, Any]:
    from featurestream.online.keys import state_key
    from featurestream.online.reader import session_features, window_features

    key = state_key(project, view.name, view.join_keys, entity)
    if view.is_session:
        return session_features(view, client.hget(key, "s"), t_ms)
    return window_features(view, client.hget(key, "s"), t_ms)


def mismatches(client: Any, project: str, views: list[StreamViewSpec], accepted: list[dict[str, Any]],
               times: list[int]) -> list[str]:
    """Every (view, entity, t, feature) where Redis disagrees with the brute-force reference."""
    from tests.reference import agrees

    problems = []
    for view in views:
        entities = {tuple(e[k] for k in view.join_keys) for e in accepted}
        functions = {a.name: a.function for a in view.aggregations}
        for entity in sorted(entities):
            for t_ms in times:
                expected = expected_features(view, accepted, entity, t_ms)
                actual = actual_features(client, project, view, entity, t_ms)
                for name, want in expected.items():
                    got = actual.get(name)
                    if not agrees(functions.get(name, "count"), got, want, magnitude=1000.0):
                        problems.append(f"{view.name}{entity}@{t_ms} {name}: redis {got!r} != reference {want!r}")
    return problems


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


_LOGS: dict[int, IO[bytes]] = {}


def run_materializer(env: dict[str, str], *extra: str) -> subprocess.Popen[bytes]:
    """The CLI materializer in the background; its stderr goes to a file (a pipe nobody reads would block it)."""
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([CLI, "materialize", "stream", "--metrics-port", "0", *extra],
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=log)
    _LOGS[proc.pid] = log
    return proc


def materializer_log(proc: subprocess.Popen[bytes]) -> str:
    log = _LOGS[proc.pid]
    log.seek(0)
    return log.read().decode("utf-8", "replace")


def assert_exits_cleanly(proc: subprocess.Popen[bytes]) -> None:
    proc.wait(timeout=240)
    assert proc.returncode == 0, materializer_log(proc)[-2000:]


def produce_random(kafka_bootstrap: str, topic: str, views: list[StreamViewSpec], n: int, seed: int,
                   partitions: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A random stream of n events into a new topic, keyed by user: (accepted, late) as the reference sees them."""
    create_topic(kafka_bootstrap, topic, partitions)
    events = random_events(views, n, seed)
    return reference_events(events, produce_keyed(kafka_bootstrap, topic, events), views[0].source.lateness_ms)


def random_events(views: list[StreamViewSpec], n: int, seed: int, start_ms: int = START) -> list[dict[str, Any]]:
    """n events over 6 hours from `start_ms`: 40 users, 15 items, disorder and a few late ones."""
    return random_stream(random.Random(seed), n, users=40, items=15, start_ms=start_ms, span_ms=6 * HOUR,
                         lateness_ms=views[0].source.lateness_ms)


def produce_keyed(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return produce(bootstrap, topic, encode(events), [str(e["user_id"]).encode() for e in events])


def check_state(redis_client: Any, repo: Path, accepted: list[dict[str, Any]]) -> None:
    """Redis equals the reference after the newest event, and the event log holds each accepted event once."""
    specs = load_repo(repo)
    views = list(specs.stream_views.values())
    newest = max(e["ts"] for e in accepted)
    assert mismatches(redis_client, specs.project, views, accepted, [newest, newest + 25 * 60_000]) == []
    log_dir = Path(views[0].source.event_log_path or "")
    logged = pq.read_table(log_dir).to_pylist()
    offsets = [(r["_partition"], r["_offset"]) for r in logged]
    assert len(offsets) == len(set(offsets)), "an event was logged twice"
    assert sorted(offsets) == sorted((e["partition"], e["offset"]) for e in accepted)


class FakeMessage:
    """What `Consumer.consume` returns, as far as the runner reads it."""

    def __init__(self, topic: str, partition: int, offset: int, value: bytes | None, error: object = None) -> None:
        self._fields = topic, partition, offset, value, error

    def topic(self) -> str:
        return self._fields[0]

    def partition(self) -> int:
        return self._fields[1]

    def offset(self) -> int:
        return self._fields[2]

    def value(self) -> bytes | None:
        return self._fields[3]

    def error(self) -> object:
        return self._fields[4]

    def key(self) -> None:
        return None
