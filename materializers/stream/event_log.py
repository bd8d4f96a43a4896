"""The event log: every accepted event once, in Parquet files named by topic, partition and offset range.

Files are written whole under a temporary name and renamed, so a reader never
sees half a file; after a crash, files past the applied progress are removed and
rewritten, which makes the log exactly-once without any coordination. Events wait
for their flush in native buffers (`native/src/event_log.rs`), already in Arrow's
layout, which the stream router appends to.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from featurestream_native import LogBuffers, PartitionLog

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


def _array(arrow_type: pa.DataType, rows: int, buffers: tuple[Any, ...]) -> pa.Array:
    """A column from its native buffers: (null count, validity bitmap, value buffers); strings come with 64-bit
    offsets, as large strings, and are cast (a flush holding over 2 GiB of one column's text fails there)."""
    nulls, validity, *values = buffers
    stored = pa.large_string() if arrow_type == pa.string() else arrow_type
    array = pa.Array.from_buffers(stored, rows, [pa.py_buffer(validity) if nulls else None,
                                                 *(pa.py_buffer(v) for v in values)], null_count=nulls)
    return array.cast(arrow_type) if stored != arrow_type else array


@dataclass
class EventLogWriter:
    """Buffers accepted events per partition (`buffers.append(partition, offset, row, ts_ms)`, which the router
    calls natively; the event-time column gets `ts_ms`) and writes them as one file per partition and flush."""

    source: StreamSourceSpec
    directory: Path
    buffers: LogBuffers = field(init=False)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._schema = event_log_schema(self.source)
        self.buffers = LogBuffers(list(self.source.schema.items()), self.source.timestamp_field)

    @property
    def pending(self) -> int:
        return self.buffers.pending

    def take(self, partitions: set[int] | None = None) -> list[tuple[int, PartitionLog]]:
        """Hand over the buffers of `partitions` (all by default) for `write`, which may run in another
        thread while appends go on into new buffers."""
        return self.buffers.take(partitions)

    def write(self, taken: list[tuple[int, PartitionLog]]) -> list[Path]:
        """Write buffers handed over by `take`, a file each; returns the files written."""
        written = []
        for partition, log in taken:
            columns = self._schema.names[:-2]
            arrays = [_array(self._schema.field(c).type, log.rows, b) for c, b in zip(columns, log.columns(), strict=True)]
            arrays.append(pa.array(np.full(log.rows, partition, np.int32)))
            arrays.append(pa.Array.from_buffers(pa.int64(), log.rows, [None, pa.py_buffer(log.offsets())]))
            table = pa.Table.from_arrays(arrays, schema=self._schema)
            final = self.directory / file_name(self.source.topic, partition, log.first, log.last)
            temporary = final.with_name(f".{final.name}.tmp")
            pq.write_table(table, temporary, compression="zstd")
            os.replace(temporary, final)
            written.append(final)
        return written

    def discard(self, partitions: set[int]) -> None:
        self.buffers.discard(partitions)

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
