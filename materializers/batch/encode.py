"""Feast's Redis bytes, built a whole Arrow column at a time.

Feast serializes entity keys (`serialize_entity_key`, version 3) and feature
values (`ValueProto`) one Python object at a time, which is most of the cost
of `feast materialize`. The wire format of the common types is trivial (a tag
byte, then a varint, 4 or 8 little-endian bytes, or length-prefixed UTF-8), so
these build the same bytes for every row with numpy and Arrow kernels and
return them as Arrow binary arrays, never as Python objects; types without a
fast path go through Feast's own converter. Tests compare every path with
Feast's serializers byte for byte.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# ValueProto field tags: (field number << 3) | wire type.
_TAG_STRING, _TAG_INT32, _TAG_INT64, _TAG_DOUBLE, _TAG_FLOAT, _TAG_BOOL = 0x12, 0x18, 0x20, 0x29, 0x35, 0x38
_VARINT_TAGS = {"Int64": _TAG_INT64, "Int32": _TAG_INT32}
_FIXED = {"Float64": (_TAG_DOUBLE, "<f8"), "Float32": (_TAG_FLOAT, "<f4")}
# google.protobuf.Timestamp field tags: seconds (1) and nanos (2), both varints.
_TAG_SECONDS, _TAG_NANOS = 0x08, 0x10
# Feast ValueType numbers of entity-key values.
_KEY_STRING, _KEY_INT32, _KEY_INT64 = 2, 3, 4
_EMPTY = pa.scalar(b"", pa.binary())
_SHIFTS = np.arange(10, dtype=np.uint64) * np.uint64(7)
_VARINT_LIMITS = np.uint64(1) << _SHIFTS[1:]  # the smallest values needing 2, 3, ... 10 varint bytes


def binary_rows(data: np.ndarray, lengths: np.ndarray) -> pa.BinaryArray:
    """A binary array over `data` (uint8, rows back to back), row i being `lengths[i]` bytes long."""
    offsets = np.zeros(len(lengths) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.BinaryArray.from_buffers(pa.binary(), len(lengths),
                                       [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(data))])


def fixed_rows(rows: np.ndarray) -> pa.BinaryArray:
    """Each row of a 2-d uint8 matrix as one binary value."""
    return binary_rows(rows.reshape(-1), np.full(rows.shape[0], rows.shape[1], np.int32))


def concat(*parts: pa.Array | bytes) -> pa.BinaryArray:
    """Row-wise concatenation of binary arrays and constant bytes."""
    return pc.binary_join_element_wise(*parts, b"")


def varints(values: np.ndarray, prefix: bytes = b"", omit_zero: bool = False) -> pa.BinaryArray:
    """`prefix` + the protobuf varint of each int64 (negatives as ten-byte two's complement, as protobuf does).

    `omit_zero` gives b"" for zeros, as proto3 writes nothing for a scalar field at its default.
    """
    u = np.asarray(values).astype(np.int64, copy=False).view(np.uint64)
    n, head = len(u), len(prefix)
    sizes = 1 + np.searchsorted(_VARINT_LIMITS, u, side="right")
    width = int(sizes.max()) if n else 1
    groups = ((u[:, None] >> _SHIFTS[:width]) & np.uint64(0x7F)).astype(np.uint8)
    groups[np.arange(width) < (sizes - 1)[:, None]] |= 0x80
    rows = np.empty((n, head + width), np.uint8)
    rows[:, :head] = np.frombuffer(prefix, np.uint8)
    rows[:, head:] = groups
    lengths = head + sizes
    if omit_zero:
        lengths[u == 0] = 0
    return binary_rows(rows[np.arange(head + width) < lengths[:, None]], lengths)


def prefixed_rows(prefix: bytes, numbers: np.ndarray) -> pa.BinaryArray:
    """Per number, `prefix` then the number's own bytes (fixed width, the array's byte order)."""
    width = numbers.itemsize
    rows = np.empty((len(numbers), len(prefix) + width), np.uint8)
    rows[:, :len(prefix)] = np.frombuffer(prefix, np.uint8)
    rows[:, len(prefix):] = numbers.view(np.uint8).reshape(len(numbers), width)
    return fixed_rows(rows)


def value_protos(column: pa.Array | pa.ChunkedArray, feast_type: str) -> pa.BinaryArray:
    """Serialized ValueProto of every value (b"" for nulls and NaN, as Feast writes an empty Value)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if feast_type in _VARINT_TAGS and pa.types.is_integer(column.type):
        out = varints(column.fill_null(0).to_numpy(), bytes([_VARINT_TAGS[feast_type]]))
    elif feast_type in _FIXED and (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
        tag, dtype = _FIXED[feast_type]
        out = prefixed_rows(bytes([tag]), column.fill_null(0).to_numpy().astype(dtype))
    elif feast_type == "Bool" and pa.types.is_boolean(column.type):
        out = prefixed_rows(bytes([_TAG_BOOL]), column.fill_null(False).to_numpy(zero_copy_only=False))
    elif feast_type == "String" and (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        text = column.cast(pa.binary()).fill_null(b"")
        out = concat(varints(pc.binary_length(text).to_numpy(), bytes([_TAG_STRING])), text)
    else:
        return _feast_protos(column, feast_type)
    missing = pc.is_null(column, nan_is_null=True)  # Feast's pd.isnull: NaN is written as an empty Value too
    return pc.if_else(missing, _EMPTY, out) if pc.any(missing).as_py() else out


def _feast_protos(column: pa.Array, feast_type: str) -> pa.BinaryArray:
    """Feast's own conversion, for the types without a fast path above."""
    from feast import types
    from feast.type_map import python_values_to_proto_values

    value_type = getattr(types, feast_type).to_value_type()
    protos = python_values_to_proto_values(column.to_pylist(), value_type)
    return pa.array([p.SerializeToString() for p in protos], pa.binary())


def entity_keys(join_keys: Sequence[str], columns: Sequence[pa.Array | pa.ChunkedArray], project: str) -> pa.BinaryArray:
    """Feast's Redis key of each row: serialized entity key (version 3) followed by the project name."""
    pairs = sorted(zip(join_keys, columns), key=lambda pair: pair[0])
    head = struct.pack("<I", len(pairs)) + b"".join(
        struct.pack("<II", _KEY_STRING, len(k.encode())) + k.encode() for k, _ in pairs)
    return concat(head, *(_key_values(column) for _, column in pairs), project.encode())


def _key_values(column: pa.Array | pa.ChunkedArray) -> pa.BinaryArray:
    """Type, length and bytes of each entity value, as Feast's `_serialize_val` writes them."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        raise ValueError(f"entity key columns must not hold nulls ({column.null_count} found)")
    if pa.types.is_integer(column.type):
        kind, dtype = (_KEY_INT32, "<i4") if column.type == pa.int32() else (_KEY_INT64, "<i8")
        numbers = column.to_numpy().astype(dtype)
        return prefixed_rows(struct.pack("<II", kind, numbers.itemsize), numbers)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        text = column.cast(pa.binary())
        lengths = pc.binary_length(text).to_numpy().astype("<u4")
        return concat(prefixed_rows(struct.pack("<I", _KEY_STRING), lengths), text)
    raise ValueError(f"entity key columns must be int32, int64 or string, not {column.type}")


def timestamps(column: pa.Array | pa.ChunkedArray) -> tuple[pa.BinaryArray, np.ndarray]:
    """Serialized google.protobuf.Timestamp of each event time, and the time in nanoseconds (for comparisons)."""
    nanos_total = pc.cast(pc.cast(column, pa.timestamp("ns", tz="UTC")), pa.int64()).to_numpy(zero_copy_only=False)
    seconds, nanos = np.divmod(nanos_total, 1_000_000_000)
    encoded = concat(varints(seconds, bytes([_TAG_SECONDS]), omit_zero=True),
                     varints(nanos, bytes([_TAG_NANOS]), omit_zero=True))
    return encoded, nanos_total
