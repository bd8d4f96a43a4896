"""Event-log files: named by topic, partition and offset range; rewrites after a crash are idempotent."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq

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
        writer.append(0, 10 + offset, _row(offset, 1_700_000_000_000 + offset), 1_700_000_000_000 + offset)
    writer.append(2, 7, _row(9, 1_700_000_000_500), 1_700_000_000_500)
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
            writer.append(1, offset, _row(1, 1_700_000_000_000), 1_700_000_000_000)
        writer.write(writer.take())
    writer.append(3, 6, _row(1, 1_700_000_000_000), 1_700_000_000_000)
    writer.write(writer.take())
    (tmp_path / ".clicks-p0001-o000000000010-000000000011.parquet.tmp").write_bytes(b"partial")
    # Another group member may be writing a file of its own partition in the same directory: left alone.
    (tmp_path / ".clicks-p0002-o000000000000-000000000003.parquet.tmp").write_bytes(b"being written")
    removed = writer.remove_after(1, 4)
    assert [p.name for p in removed] == ["clicks-p0001-o000000000005-000000000009.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".clicks-p0002-o000000000000-000000000003.parquet.tmp",
                                                          "clicks-p0001-o000000000000-000000000004.parquet",
                                                          "clicks-p0003-o000000000006-000000000006.parquet"]
