"""Helpers for integration tests of the stream materializer: retargeted specs, random streams, producing."""

from __future__ import annotations

import dataclasses
import random
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from featurestream.definitions import RepoSpecs, StreamViewSpec, check_repo
from tests.conftest import FEATURE_REPO

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
    return window_features(view, client.hgetall(key), t_ms)


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
