"""`featurestream replay`: a file of events into a topic, keyed by entity, every record once, at a rate."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from tests.conftest import run_cli
from tests.streams import create_topic

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _consume_all(bootstrap: str, topic: str, expected: int) -> list[tuple[bytes | None, bytes]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    out: list[tuple[bytes | None, bytes]] = []
    deadline = time.monotonic() + 60
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                if not msg.error():
                    out.append((msg.key(), msg.value() or b""))
    finally:
        consumer.close()
    return out


def test_replay_a_file_keyed_by_user_at_a_rate(tmp_path: Path, kafka_bootstrap: str, topic_name: str,
                                               applied_repo: dict[str, str]) -> None:
    create_topic(kafka_bootstrap, topic_name, 2)
    lines = [b'{"event_id":"e%d","user_id":%d,"item_id":1,"event_type":"view","price":1.0,'
             b'"event_timestamp":"2026-11-26T10:00:00Z"}' % (i, i % 7) for i in range(300)]
    lines.insert(5, b"{not json")
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")
    began = time.monotonic()
    result = run_cli("replay", "--file", str(events), "--topic", topic_name, "--rate", "200", env=applied_repo)
    elapsed = time.monotonic() - began
    assert result.returncode == 0, result.stderr
    assert "produced 301 records" in result.stdout
    assert elapsed >= 1.0, "301 records at 200/s cannot take under a second and a half"
    received = _consume_all(kafka_bootstrap, topic_name, 301)
    assert sorted(v for _, v in received) == sorted(lines)
    keys = {v: k for k, v in received}
    assert keys[b"{not json"] is None
    assert all(keys[line] == str(i % 7).encode() for i, line in enumerate(lines[:5]))


def test_replay_errors_are_sentences(tmp_path: Path, applied_repo: dict[str, str]) -> None:
    missing = run_cli("replay", "--file", str(tmp_path / "nope.jsonl"), env=applied_repo)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    both = run_cli("replay", env=applied_repo)
    assert both.returncode == 1 and "exactly one of --file" in both.stderr
    unknown = run_cli("replay", "--event-log", "--source", "nope", env=applied_repo)
    assert unknown.returncode == 1 and "no stream feature view reads source 'nope'" in unknown.stderr
