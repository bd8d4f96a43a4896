"""The dead-letter topic `<topic>.dlq`: the original bytes plus headers saying why and where from."""

from __future__ import annotations

from collections import Counter
from typing import Any

from confluent_kafka import Producer


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"


class DeadLetters:
    """Produces rejected records asynchronously; `flush` before committing the offsets they came from."""

    def __init__(self, producer_config: dict[str, Any]) -> None:
        self._producer = Producer({**producer_config, "linger.ms": 20, "enable.idempotence": True})
        self.counts: Counter[str] = Counter()
        self._errors: list[str] = []

    def send(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
             reason: str, detail: str) -> None:
        headers = [
            ("reason", reason.encode()),
            ("error", detail[:500].encode()),
            ("original_topic", topic.encode()),
            ("original_partition", str(partition).encode()),
            ("original_offset", str(offset).encode()),
        ]
        while True:
            try:
                self._producer.produce(dlq_topic(topic), value=value, key=key, headers=headers,
                                       on_delivery=self._delivered)
                break
            except BufferError:  # local queue full: let deliveries drain, then retry
                self._producer.poll(0.1)
        self._producer.poll(0)
        self.counts[reason] += 1

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self._errors.append(str(err))

    def flush(self, timeout: float = 30.0) -> None:
        """Block until every dead letter is acknowledged; raise when one could not be written."""
        remaining = self._producer.flush(timeout)
        if remaining or self._errors:
            errors, self._errors = self._errors, []
            raise RuntimeError(f"dead-letter delivery failed ({remaining} unacknowledged): {errors[:3]}")
