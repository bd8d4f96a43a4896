"""Bytes from Kafka into typed rows, or a dead-letter reason: the partition never stalls on a bad record.

Parsing and validation are native (`native/src/decode.rs`): with msgspec, then a
dict and the event time from a datetime, decoding was a quarter of the consumer
thread's time.
"""

from __future__ import annotations

from featurestream_native import (
    BAD_TIMESTAMP,
    LATE,
    MISSING_KEY,
    MISSING_TIMESTAMP,
    UDF_ERROR,
    UNDECODABLE,
    WRONG_TYPE,
    RowDecoder,
)

# Every dead-letter reason (the `reason` header and the metric label), though a watermark finds LATE and a
# udf UDF_ERROR.
__all__ = ["BAD_TIMESTAMP", "LATE", "MISSING_KEY", "MISSING_TIMESTAMP", "UDF_ERROR", "UNDECODABLE", "WRONG_TYPE",
           "Decoder", "Rejected"]

MIN_TS_MS = 946_684_800_000  # 2000-01-01: anything earlier is a unit mistake, not an event
MAX_TS_MS = 32_503_680_000_000  # year 3000, for epoch numbers
MAX_FUTURE_MS = 86_400_000  # more than a day ahead of the wall clock is absurd


class Rejected(Exception):
    """A record that goes to the dead-letter topic, with its reason (the `reason` header and metric label)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Decoder(RowDecoder):
    """Validates JSON events against a KafkaSource schema (column -> string/bigint/double/boolean/timestamp).

    `decode(value, now_ms=None)` gives the row (every column, absent ones None, the event time as an aware UTC
    datetime at millisecond precision) and the event time in ms, or raises Rejected. `now_ms`, the wall clock
    that bounds plausible event times, is read once per micro-batch by the caller.
    """

    def __new__(cls, schema: dict[str, str], timestamp_field: str, required_keys: tuple[str, ...]) -> Decoder:
        return super().__new__(cls, list(schema.items()), timestamp_field, list(required_keys), Rejected,
                               MIN_TS_MS, MAX_TS_MS, MAX_FUTURE_MS)
