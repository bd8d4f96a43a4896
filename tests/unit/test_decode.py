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
        (b'{"user_id": 1, "item_id": 1, "event_timestamp": 1795000000000.5}', BAD_TIMESTAMP),
        (b'{"user_id": 1, "item_id": 1, "event_timestamp": true}', BAD_TIMESTAMP),
        (b'{"user_id": 1, "item_id": 1, "event_timestamp": "2026-02-29T10:00:00Z"}', BAD_TIMESTAMP),
        (b'{"user_id": 1, "item_id": 1, "event_timestamp": "2026-11-26T10:00:00+25:00"}', BAD_TIMESTAMP),
        (b'{"user_id": 1, "item_id": 1, "event_timestamp": "2026-11-26T10:00:00Z"} trailing', UNDECODABLE),
        (b'{"user_id": 1, "item_id": 1, "event_timestamp": "2026-11-26T10:00:00Z"', UNDECODABLE),
        (b'{"user_id": true, "item_id": 1, "event_timestamp": "2026-11-26T10:00:00Z"}', WRONG_TYPE),
        (b'{"user_id": 1, "item_id": 1, "price": [1], "event_timestamp": "2026-11-26T10:00:00Z"}', WRONG_TYPE),
        (b'{"user_id": 1, "item_id": 1, "event_id": {"a": 1}, "event_timestamp": "2026-11-26T10:00:00Z"}', WRONG_TYPE),
        (b'{"user_id": 1, "item_id": 1, "event_id": 7, "event_timestamp": "2026-11-26T10:00:00Z"}', WRONG_TYPE),
        (b'{"user_id": 9223372036854775808, "item_id": 1, "event_timestamp": "2026-11-26T10:00:00Z"}', WRONG_TYPE),
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


def test_offsets_and_separators_name_the_same_instant_in_utc() -> None:
    expected = datetime(2026, 11, 26, 10, 0, 0, 123000, tzinfo=UTC)
    for stamp in (b"2026-11-26T12:00:00.1239+02:00", b"2026-11-26 09:30:00.123-00:30", b"2026-11-26t10:00:00.123z",
                  b"2026-11-26T07:00:00.123-0300"):
        row, ts = DECODER.decode(b'{"user_id":3,"item_id":5,"event_timestamp":"%s"}' % stamp)
        assert ts == int(expected.timestamp() * 1000), stamp
        assert row["event_timestamp"] == expected and row["event_timestamp"].utcoffset().total_seconds() == 0


def test_values_are_coerced_only_where_the_schema_allows() -> None:
    """Integers are doubles where a double is expected; the last of repeated keys wins; escaped keys match."""
    row, _ = DECODER.decode(b'{"user_id":1,"us\\u0065r_id":4,"item_id":9223372036854775807,"price":18446744073709551616,'
                            b'"event_type":"caf\\u00e9","event_timestamp":"2026-11-26T10:00:00Z"}')
    assert row["user_id"] == 4 and row["item_id"] == 2**63 - 1
    assert row["price"] == float(2**64) and isinstance(row["price"], float)
    assert row["event_type"] == "caf\u00e9"


def test_other_timestamp_columns_take_iso_text_or_epoch_ms() -> None:
    decoder = Decoder({"id": "bigint", "seen": "timestamp", "flag": "boolean", "event_timestamp": "timestamp"},
                      "event_timestamp", ("id",))
    row, _ = decoder.decode(b'{"id":1,"seen":"1999-01-01T00:00:00Z","flag":false,"event_timestamp":"2026-11-26T10:00:00Z"}')
    assert row["seen"] == datetime(1999, 1, 1, tzinfo=UTC) and row["flag"] is False
    row, _ = decoder.decode(b'{"id":1,"seen":1000,"event_timestamp":"2026-11-26T10:00:00Z"}')
    assert row["seen"] == datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC) and row["flag"] is None
    for seen in (b'"soon"', b"1.5", b"99999999999999999"):
        with pytest.raises(Rejected) as caught:
            decoder.decode(b'{"id":1,"seen":%s,"event_timestamp":"2026-11-26T10:00:00Z"}' % seen)
        assert caught.value.reason == WRONG_TYPE and "seen" in caught.value.detail


def test_a_schema_the_decoder_cannot_check_is_refused_up_front() -> None:
    with pytest.raises(ValueError, match="unknown type 'decimal'"):
        Decoder({"id": "decimal", "ts": "timestamp"}, "ts", ())
    with pytest.raises(ValueError, match="the event time column ts is a string: it must be a timestamp, or a bigint"):
        Decoder({"id": "bigint", "ts": "string"}, "ts", ())
    with pytest.raises(ValueError, match="no column ts for the event time"):
        Decoder({"id": "bigint"}, "ts", ())
    with pytest.raises(ValueError, match="no column for the key user"):
        Decoder({"id": "bigint", "ts": "timestamp"}, "ts", ("user",))


def test_an_event_time_column_of_bigint_takes_epoch_ms_only() -> None:
    decoder = Decoder({"id": "bigint", "ts": "bigint"}, "ts", ("id",))
    row, ts = decoder.decode(b'{"id":1,"ts":1795687200123}')
    assert ts == 1_795_687_200_123 and row["ts"] == datetime(2026, 11, 26, 10, 0, 0, 123000, tzinfo=UTC)
    with pytest.raises(Rejected) as caught:
        decoder.decode(b'{"id":1,"ts":"2026-11-26T10:00:00Z"}')
    assert caught.value.reason == BAD_TIMESTAMP and "expected epoch milliseconds" in caught.value.detail


def test_the_event_time_is_judged_first() -> None:
    with pytest.raises(Rejected) as caught:
        DECODER.decode(b'{"user_id":"abc","item_id":1}')
    assert caught.value.reason == MISSING_TIMESTAMP


def test_a_missing_key_is_a_missing_key_whatever_its_type() -> None:
    decoder = Decoder({"seen": "timestamp", "ts": "timestamp"}, "ts", ("seen",))
    with pytest.raises(Rejected) as caught:
        decoder.decode(b'{"ts":"2026-11-26T10:00:00Z"}')
    assert caught.value.reason == MISSING_KEY and "`seen` is missing" in caught.value.detail
