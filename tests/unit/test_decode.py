"""Decoding and validation of raw Kafka records: every bad record gets its reason, good ones their types."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from materializers.stream.decode import (
    BAD_TIMESTAMP,
    MISSING_KEY,
    MISSING_TIMESTAMP,
    UNDECODABLE,
    WRONG_TYPE,
    Decoder,
    Rejected,
)

SCHEMA = {"event_id": "string", "user_id": "bigint", "item_id": "bigint", "event_type": "string",
          "price": "double", "event_timestamp": "timestamp"}
DECODER = Decoder(SCHEMA, "event_timestamp", ("user_id", "item_id"))


def test_a_good_event_is_typed() -> None:
    row, ts = DECODER.decode(b'{"event_id":"e1","user_id":3,"item_id":5,"event_type":"view","price":2,'
                             b'"event_timestamp":"2026-11-26T10:00:00.123Z","extra":true}')
    assert ts == int(datetime(2026, 11, 26, 10, 0, 0, 123000, tzinfo=UTC).timestamp() * 1000)
    assert row == {"event_id": "e1", "user_id": 3, "item_id": 5, "event_type": "view", "price": 2.0,
                   "event_timestamp": datetime(2026, 11, 26, 10, 0, 0, 123000, tzinfo=UTC)}
    assert isinstance(row["price"], float)


def test_optional_columns_may_be_absent_and_times_naive_or_epoch_ms() -> None:
    row, ts = DECODER.decode(b'{"user_id":3,"item_id":5,"event_timestamp":"2026-11-26T10:00:00.999999"}')
    assert row["price"] is None and row["event_id"] is None
    assert ts % 1000 == 999 and row["event_timestamp"].microsecond == 999000
    _, ts2 = DECODER.decode(b'{"user_id":3,"item_id":5,"event_timestamp":%d}' % ts)
    assert ts2 == ts


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (b"", UNDECODABLE),
        (b'{"user_id": 1, "ite', UNDECODABLE),
        (b"\xff\xfe\x00garbage", UNDECODABLE),
        (b'{"event_id": "caf\xe9", "user_id": 1, "item_id": 1, "event_timestamp": "2026-11-26T10:00:00Z"}', UNDECODABLE),
        (b"[1, 2]", UNDECODABLE),
        (b'"just a string"', UNDECODABLE),
        (b'{"item_id": 1, "event_timestamp": "2026-11-26T10:00:00Z"}', MISSING_KEY),
        (b'{"user_id": null, "item_id": 1, "event_timestamp": "2026-11-26T10:00:00Z"}', MISSING_KEY),
        (b'{"user_id": 1, "item_id": 1}', MISSING_TIMESTAMP),
        (b'{"user_id": 1, "item_id": 1, "event_timestamp": null}', MISSING_TIMESTAMP),
        (b'{"user_id": "abc", "item_id": 1, "event_timestamp": "2026-11-26T10:00:00Z"}', WRONG_TYPE),
        (b'{"user_id": 1.5, "item_id": 1, "event_timestamp": "2026-11-26T10:00:00Z"}', WRONG_TYPE),
        (b'{"user_id": 1, "item_id": 100000000000000000000, "event_timestamp": "2026-11-26T10:00:00Z"}', WRONG_TYPE),
        (b'{"user_id": -9223372036854775809, "item_id": 1, "event_timestamp": "2026-11-26T10:00:00Z"}', WRONG_TYPE),
        (b'{"user_id": 1, "item_id": 1, "price": "cheap", "event_timestamp": "2026-11-26T10:00:00Z"}', WRONG_TYPE),
        (b'{"user_id": 1, "item_id": 1, "event_timestamp": "yesterday"}', BAD_TIMESTAMP),
        (b'{"user_id": 1, "item_id": 1, "event_timestamp": "2999-01-01T00:00:00Z"}', BAD_TIMESTAMP),
        (b'{"user_id": 1, "item_id": 1, "event_timestamp": "1970-01-01T00:00:00Z"}', BAD_TIMESTAMP),
        (b'{"user_id": 1, "item_id": 1, "event_timestamp": 1700000000}', BAD_TIMESTAMP),
    ],
)
def test_bad_records_get_their_reason(record: bytes, reason: str) -> None:
    with pytest.raises(Rejected) as caught:
        DECODER.decode(record)
    assert caught.value.reason == reason
    assert caught.value.detail


def test_the_future_bound_follows_the_clock_given() -> None:
    """A micro-batch passes its clock reading: an event more than a day past it is implausible."""
    now_ms = int(datetime(2026, 11, 26, 10, 0, tzinfo=UTC).timestamp() * 1000)
    record = b'{"user_id": 1, "item_id": 1, "event_timestamp": "2026-11-27T11:00:00Z"}'
    with pytest.raises(Rejected) as caught:
        DECODER.decode(record, now_ms)
    assert caught.value.reason == BAD_TIMESTAMP
    assert DECODER.decode(record, now_ms + 3_600_000)[1] == now_ms + 25 * 3_600_000
