"""The event log: every accepted event once, in Parquet files named by topic, partition and offset range.

Files are written whole under a temporary name and renamed, so a reader never
sees half a file; after a crash, files past the applied progress are removed and
rewritten, which makes the log exactly-once without any coordination.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from featurestream.definitions import StreamSourceSpec
from featurestream.event_log_files import file_name, log_files, partition_prefix

ARROW_TYPES = {
    "string": pa.string(),
    "bigint": pa.int64(),
    "double": pa.float64(),
    "boolean": pa.bool_(),
    "timestamp": pa.timestamp("ms", tz="UTC"),
}
PARTITION_COLUMN = "_partition"
OFFSET_COLUMN = "_offset"


def event_log_schema(source: StreamSourceSpec) -> pa.Schema:
    columns = [pa.field(name, ARROW_TYPES[kind]) for name, kind in source.schema.items()]
    return pa.schema([*columns, pa.field(PARTITION_COLUMN, pa.int32()), pa.field(OFFSET_COLUMN, pa.int64())])


@dataclass
class _Buffer:
    columns: dict[str, list[Any]]
    first: int = -1
    last: int = -1
    rows: int = 0


@dataclass
class EventLogWriter:
    """Buffers accepted events per partition and writes them as one file per partition and flush."""

    source: StreamSourceSpec
    directory: Path
    _buffers: dict[int, _Buffer] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._schema = event_log_schema(self.source)
        self._columns = list(self.source.schema)

    def append(self, partition: int, offset: int, row: dict[str, Any], ts_ms: int) -> None:
        buffer = self._buffers.get(partition)
        if buffer is None:
            buffer = self._buffers[partition] = _Buffer({c: [] for c in (*self._columns, OFFSET_COLUMN)})
            buffer.first = offset
        for column in self._columns:
            buffer.columns[column].append(row[column])
        buffer.columns[self.source.timestamp_field][-1] = ts_ms
        buffer.columns[OFFSET_COLUMN].append(offset)
        buffer.last = offset
        buffer.rows += 1

    @property
    def pending(self) -> int:
        return sum(b.rows for b in self._buffers.values())

    def take(self, partitions: set[int] | None = None) -> list[tuple[int, _Buffer]]:
        """Hand over the buffers of `partitions` (all by default) for `write`, which may run in another
        thread while appends go on into new buffers."""
        chosen = self._buffers.keys() if partitions is None else partitions & self._buffers.keys()
        return [(partition, self._buffers.pop(partition)) for partition in sorted(chosen)]

    def write(self, taken: list[tuple[int, _Buffer]]) -> list[Path]:
        """Write buffers handed over by `take`, a file each; returns the files written."""
        written = []
        for partition, buffer in taken:
            arrays = [pa.array(buffer.columns[c], type=self._schema.field(c).type) for c in self._columns]
            arrays.append(pa.array([partition] * buffer.rows, type=pa.int32()))
            arrays.append(pa.array(buffer.columns[OFFSET_COLUMN], type=pa.int64()))
            table = pa.Table.from_arrays(arrays, schema=self._schema)
            final = self.directory / file_name(self.source.topic, partition, buffer.first, buffer.last)
            temporary = final.with_name(f".{final.name}.tmp")
            pq.write_table(table, temporary, compression="zstd")
            os.replace(temporary, final)
            written.append(final)
        return written

    def discard(self, partitions: set[int]) -> None:
        for partition in partitions:
            self._buffers.pop(partition, None)

    def remove_after(self, partition: int, applied_offset: int) -> list[Path]:
        """Delete files (and leftovers) of `partition` holding offsets past what was applied."""
        removed = []
        # Only this partition's: another member of the group may be writing its own partitions' files here.
        for path in self.directory.glob(f".{partition_prefix(self.source.topic, partition)}*.tmp"):
            path.unlink(missing_ok=True)
        for file in log_files(self.directory, self.source.topic):
            if file.partition == partition and file.first > applied_offset:
                file.path.unlink()
                removed.append(file.path)
        return removed
