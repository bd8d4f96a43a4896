"""Event-log files: named by topic, partition and offset range; rewrites after a crash are idempotent."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurestream.definitions import StreamSourceSpec
from materializers.stream.event_log import EventLogWriter

SOURCE = StreamSourceSpec(name="clicks", topic="clicks", bootstrap_servers="", timestamp_field="ts",
                          schema={"user_id": "bigint", "price": "double", "ts": "timestamp"},
                          lateness_ms=0, event_log_path=None)


def _row(user: int, ts_ms: int) -> dict:
    return {"user_id": user, "price": None if user % 2 else 1.5, "ts": datetime.fromtimestamp(ts_ms / 1000, UTC)}


def test_files_are_named_by_offset_range_and_typed(tmp_path: Path) -> None:
    writer = EventLogWriter(SOURCE, tmp_path)
    for offset in range(3):
        writer.buffers.append(0, 10 + offset, _row(offset, 1_700_000_000_000 + offset), 1_700_000_000_000 + offset)
    writer.buffers.append(2, 7, _row(9, 1_700_000_000_500), 1_700_000_000_500)
    assert writer.pending == 4
    written = writer.write(writer.take())
    assert sorted(p.name for p in written) == ["clicks-p0000-o000000000010-000000000012.parquet",
                                               "clicks-p0002-o000000000007-000000000007.parquet"]
    table = pq.read_table(tmp_path / "clicks-p0000-o000000000010-000000000012.parquet")
    assert str(table.schema.field("ts").type) == "timestamp[ms, tz=UTC]"
    assert table.column("_offset").to_pylist() == [10, 11, 12]
    assert table.column("_partition").to_pylist() == [0, 0, 0]
    assert table.column("price").to_pylist() == [1.5, None, 1.5]
    assert writer.pending == 0 and writer.write(writer.take()) == []


def test_remove_after_drops_only_unapplied_files_of_that_partition(tmp_path: Path) -> None:
    writer = EventLogWriter(SOURCE, tmp_path)
    for first, last in ((0, 4), (5, 9)):
        for offset in range(first, last + 1):
            writer.buffers.append(1, offset, _row(1, 1_700_000_000_000), 1_700_000_000_000)
        writer.write(writer.take())
    writer.buffers.append(3, 6, _row(1, 1_700_000_000_000), 1_700_000_000_000)
    writer.write(writer.take())
    (tmp_path / ".clicks-p0001-o000000000010-000000000011.parquet.tmp").write_bytes(b"partial")
    # Another group member may be writing a file of its own partition in the same directory: left alone.
    (tmp_path / ".clicks-p0002-o000000000000-000000000003.parquet.tmp").write_bytes(b"being written")
    removed = writer.remove_after(1, 4)
    assert [p.name for p in removed] == ["clicks-p0001-o000000000005-000000000009.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".clicks-p0002-o000000000000-000000000003.parquet.tmp",
                                                          "clicks-p0001-o000000000000-000000000004.parquet",
                                                          "clicks-p0003-o000000000006-000000000006.parquet"]


EVERY_TYPE = StreamSourceSpec(name="all", topic="all", bootstrap_servers="", timestamp_field="ts",
                              schema={"s": "string", "i": "bigint", "d": "double", "b": "boolean", "seen": "timestamp",
                                      "ts": "timestamp"},
                              lateness_ms=0, event_log_path=None)


def test_every_type_and_null_is_written_as_pyarrow_converts_it(tmp_path: Path) -> None:
    """The native buffers hold what pyarrow would make of the same Python values."""
    rng = random.Random(3)
    texts = ["", "café", "日本", "x" * 300, None]
    seen = [datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone(timedelta(hours=-5))),
            datetime(1999, 12, 31, 23, 59, 59, 1000), 1_700_000_000_123, None]
    rows = [{"s": rng.choice(texts), "i": rng.choice([0, -1, 2**63 - 1, -(2**63), 17, None]),
             "d": rng.choice([0.5, -2.25, 3, None, float("inf")]), "b": rng.choice([True, False, None]),
             "seen": rng.choice(seen), "ts": None} for _ in range(200)]
    writer = EventLogWriter(EVERY_TYPE, tmp_path)
    for offset, row in enumerate(rows):
        writer.buffers.append(5, 100 + offset, row, 1_700_000_000_000 + offset)
    (path,) = writer.write(writer.take({5, 6}))
    table = pq.read_table(path)
    expected = {c: [r[c] for r in rows] for c in ("s", "i", "d", "b", "seen")}
    expected["ts"] = [1_700_000_000_000 + offset for offset in range(len(rows))]
    for column, values in expected.items():
        assert table.column(column).to_pylist() == pa.array(values, EVERY_TYPE_ARROW[column]).to_pylist(), column
    assert table.column("_offset").to_pylist() == list(range(100, 300))
    assert table.column("_partition").to_pylist() == [5] * 200


EVERY_TYPE_ARROW = {"s": pa.string(), "i": pa.int64(), "d": pa.float64(), "b": pa.bool_(),
                    "seen": pa.timestamp("ms", tz="UTC"), "ts": pa.timestamp("ms", tz="UTC")}


@pytest.mark.parametrize(("column", "value"), [("i", 1.5), ("i", True), ("d", "1"), ("b", 1), ("s", 3),
                                               ("seen", "2026-01-01"), ("s", "\ud800")])
def test_a_value_of_the_wrong_type_is_refused_whole(column: str, value: object, tmp_path: Path) -> None:
    writer = EventLogWriter(EVERY_TYPE, tmp_path)
    good = {"s": "a", "i": 1, "d": 1.0, "b": True, "seen": None, "ts": None}
    writer.buffers.append(0, 1, good, 1_700_000_000_000)
    with pytest.raises((TypeError, UnicodeEncodeError)):
        writer.buffers.append(0, 2, {**good, column: value}, 1_700_000_000_001)
    writer.buffers.append(0, 3, good, 1_700_000_000_002)
    assert writer.pending == 2
    (path,) = writer.write(writer.take())
    assert pq.read_table(path).column("s").to_pylist() == ["a", "a"] and path.name.endswith("o000000000001-000000000003.parquet")


def test_take_and_discard_pick_partitions(tmp_path: Path) -> None:
    writer = EventLogWriter(SOURCE, tmp_path)
    for partition in (3, 1, 2):
        writer.buffers.append(partition, 0, _row(1, 1_700_000_000_000), 1_700_000_000_000)
    writer.discard({2, 9})
    assert [p for p, _ in writer.take({1, 2, 7})] == [1]
    assert [(p, log.rows) for p, log in writer.take()] == [(3, 1)] and writer.pending == 0


def test_a_refused_first_row_leaves_no_buffer_behind(tmp_path: Path) -> None:
    writer = EventLogWriter(EVERY_TYPE, tmp_path)
    with pytest.raises(TypeError, match="event log column i: a str is not a bigint"):
        writer.buffers.append(4, 10, {"i": "x"}, 1_700_000_000_000)
    assert writer.pending == 0 and writer.take() == []


def test_the_event_log_refuses_a_schema_the_decoder_refuses(tmp_path: Path) -> None:
    source = StreamSourceSpec(name="s", topic="s", bootstrap_servers="", timestamp_field="ts",
                              schema={"id": "bigint", "ts": "string"}, lateness_ms=0, event_log_path=None)
    with pytest.raises(ValueError, match="the event time column ts is a string"):
        EventLogWriter(source, tmp_path)
