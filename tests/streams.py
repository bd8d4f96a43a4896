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
