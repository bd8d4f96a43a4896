"""Redis commands for whole columns, in Redis's wire protocol (RESP), built by Arrow kernels.

redis-py packs each command from Python objects (several microseconds a
command); a batch view sends one or two commands per entity, so here every
row's command is one element of an Arrow binary array and the whole batch goes
to the socket as the array's data buffer, with no Python object per row.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from materializers.batch.encode import binary_rows, concat

Arg = bytes | pa.BinaryArray


def commands(*args: Arg) -> pa.BinaryArray:
    """One RESP command per row: `args` are its words, constants or one value per row (at least one array)."""
    parts: list[Arg] = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts += _bulk(arg)
    return _joined(parts)


def grouped(word: bytes, keys: pa.BinaryArray, size: int) -> pa.BinaryArray:
    """`word` over `size` keys at a time (`EXISTS k1 ... k64`): the rows that start a group carry its head."""
    starts = np.arange(0, len(keys), size)
    heads = [b"*%d\r\n$%d\r\n%s\r\n" % (min(size, len(keys) - start) + 1, len(word), word) for start in starts]
    lengths = np.zeros(len(keys), np.int64)
    lengths[starts] = [len(head) for head in heads]
    return _joined([binary_rows(np.frombuffer(b"".join(heads), np.uint8), lengths), *_bulk(keys)])


def _bulk(arg: Arg) -> list[Arg]:
    """The parts of one argument as a RESP bulk string: `$<length>\\r\\n<bytes>\\r\\n`."""
    if isinstance(arg, bytes):
        return [b"$%d\r\n%s\r\n" % (len(arg), arg)]
    lengths = _lengths(arg)
    if len(lengths) and lengths.min() == lengths.max():  # fixed width: the length is a constant
        return [b"$%d\r\n" % lengths[0], arg, b"\r\n"]
    return [b"$", pa.array(lengths).cast(pa.string()).cast(pa.binary()), b"\r\n", arg, b"\r\n"]


def _joined(parts: list[Arg]) -> pa.BinaryArray:
    """Row-wise concatenation of the parts, adjacent constants merged first."""
    merged: list[Arg] = []
    for part in parts:
        if merged and isinstance(part, bytes) and isinstance(merged[-1], bytes):
            merged[-1] += part
        else:
            merged.append(part)
    return concat(*merged)


def _offsets(rows: pa.BinaryArray) -> np.ndarray:
    return np.frombuffer(rows.buffers()[1], np.int32)[rows.offset:rows.offset + len(rows) + 1]


def _lengths(rows: pa.BinaryArray) -> np.ndarray:
    return np.diff(_offsets(rows))


def wire(rows: pa.BinaryArray) -> memoryview:
    """The bytes of all rows back to back, without a copy (what the socket sends)."""
    if not len(rows):
        return memoryview(b"")
    offsets = _offsets(rows)
    return memoryview(rows.buffers()[2])[offsets[0]:offsets[-1]]
