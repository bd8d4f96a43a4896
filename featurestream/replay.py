"""Push stored events (a JSON-lines file or the event log) into a Kafka topic, keyed by entity, at a chosen rate."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
from confluent_kafka import KafkaException, Producer

from featurestream.event_log_files import log_paths


@dataclass(frozen=True)
class ReplaySummary:
    produced: int
    failed: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.produced / self.seconds if self.seconds > 0 else 0.0


def count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


def iter_jsonl(path: Path) -> Iterator[bytes]:
    """Raw records, one per line, bytes untouched (malformed ones included: the materializer judges them)."""
    with open(path, "rb") as handle:
        for line in handle:
            record = line.rstrip(b"\r\n")
            if record:
                yield record


def iter_event_log(directory: Path, timestamp_field: str) -> Iterator[bytes]:
    """The event log's events as JSON again, in (file, offset) order, without the bookkeeping columns."""
    for path in log_paths(directory):
        table = pq.read_table(path)
        columns = [c for c in table.column_names if not c.startswith("_")]
        for row in table.select(columns).to_pylist():
            stamp = row[timestamp_field]
            row[timestamp_field] = stamp.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            yield orjson.dumps(row)


def entity_key(record: bytes, key_field: str) -> bytes | None:
    try:
        value = orjson.loads(record).get(key_field)
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return None if value is None else str(value).encode()


def replay(records: Iterable[bytes], topic: str, kafka_config: dict[str, Any], key_field: str | None,
           rate: float = 0.0, progress: Callable[[int], None] | None = None) -> ReplaySummary:
    """Produce every record; `rate` > 0 paces to that many records per second. Waits for all acknowledgements."""
    failures: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    producer = Producer({**kafka_config, "linger.ms": 5, "batch.num.messages": 10_000,
                         "queue.buffering.max.messages": 500_000, "enable.idempotence": True,
                         "compression.type": "lz4"})
    began = time.monotonic()
    sent = 0
    every = max(1, min(1000, int(rate / 100))) if rate > 0 else 1000
    for record in records:
        key = entity_key(record, key_field) if key_field else None
        while True:
            try:
                producer.produce(topic, value=record, key=key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        sent += 1
        if sent % every == 0:
            producer.poll(0)
            if progress and sent % 1000 == 0:
                progress(sent)
            if rate > 0:
                ahead = began + sent / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
    remaining = producer.flush(60)
    if progress:
        progress(sent)
    if remaining:
        raise KafkaException(f"{remaining} records were not acknowledged by the broker within 60 s")
    return ReplaySummary(sent - len(failures), len(failures), time.monotonic() - began)
