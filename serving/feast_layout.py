"""Feast's Redis layout for batch views, built with Feast's own helpers so keys and values match byte for byte.

Hash key = serialized entity key (v3) + project; field = murmur3 of `<view>:<feature>`;
value = a ValueProto; `_ts:<view>` = a protobuf Timestamp. Values are rendered to JSON
the way Feast's feature server renders them (`feast.feature_server_utils`).
"""

from __future__ import annotations

import functools
import math
import struct
import time
from collections.abc import Callable, Sequence
from itertools import chain
from typing import Any

import numpy as np
from feast.feature_server_utils import _timestamp_to_str, _value_to_native
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.protos.feast.types.Value_pb2 import ValueType as ProtoValueType
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

EPOCH = "1970-01-01T00:00:00Z"
_CACHE_LIMIT = 200_000
_PROTO_TYPES = {name: getattr(ProtoValueType, name) for name in ("STRING", "INT32", "INT64", "UNIX_TIMESTAMP")}
_TYPE_AND_LENGTH = struct.Struct("<II").pack
_DOUBLE_TAG = Value.DESCRIPTOR.fields_by_name["double_val"].number << 3 | 1  # protobuf tag of a fixed64 field
_unpack_double = struct.Struct("<d").unpack_from
_DOUBLE_VALUE = np.dtype([("tag", "u1"), ("number", "<f8")])  # a double ValueProto: tag byte, 8 bytes LE


def _int64(value: int) -> bytes:
    return struct.pack("<q", value)


def _int32(value: int) -> bytes:
    return struct.pack("<i", value)


def _timestamp(value: int) -> bytes:
    return struct.pack("<q", value)


def _string(value: str) -> bytes:
    return value.encode("utf8")


# Entity value type -> how Feast's key_encoding_utils._serialize_val writes it, and the type code it records.
_PACKERS: dict[str, Callable[[Any], bytes]] = {"INT64": _int64, "INT32": _int32, "UNIX_TIMESTAMP": _timestamp,
                                               "STRING": _string}
_PACKED_TYPES = {packer: _PROTO_TYPES[name] for name, packer in _PACKERS.items()}


def feature_fields(view: str, features: Sequence[str]) -> list[bytes]:
    """HMGET fields of a batch view's features, then its timestamp field last."""
    return [_mmh3(f"{view}:{name}") for name in features] + [f"_ts:{view}".encode()]


class BoundedCache(dict[Any, Any]):
    """A dict that forgets everything when it grows past a limit: hot keys come back at once, memory stays flat."""

    def put(self, key: Any, value: Any) -> Any:
        if len(self) >= _CACHE_LIMIT:
            self.clear()
        self[key] = value
        return value


class EntityKeys:
    """Feast Redis keys of entities: (join keys, values) -> key bytes.

    Feast's `serialize_entity_key` (v3) builds protobuf messages per key; this writes the same
    bytes with struct for the key types Feast serializes (the unit tests compare the two on
    many values), and falls back to Feast's own code for anything else.
    """

    def __init__(self, project: str, key_types: dict[str, str]) -> None:
        self.project = project
        self.suffix = project.encode()
        self.types = {key: ValueType[name] for key, name in key_types.items()}
        self._layouts: dict[tuple[str, ...], tuple[bytes, list[tuple[int, Any]]] | None] = {}

    def __call__(self, join_keys: tuple[str, ...], values: tuple[Any, ...]) -> bytes:
        layout = self._layouts.get(join_keys, False)
        if layout is False:
            layout = self._layouts[join_keys] = self._layout(join_keys)
        if layout is None:
            return self._feast_key(join_keys, values)
        head, packers = layout
        parts = [head]
        for index, pack in packers:
            raw = pack(values[index])
            parts.append(_TYPE_AND_LENGTH(_PACKED_TYPES[pack], len(raw)))
            parts.append(raw)
        parts.append(self.suffix)
        return b"".join(parts)

    def _layout(self, join_keys: tuple[str, ...]) -> tuple[bytes, list[tuple[int, Any]]] | None:
        """Key names sorted as Feast sorts them, encoded once; one packer per value, or None to use Feast's code."""
        order = sorted(range(len(join_keys)), key=lambda i: join_keys[i]) if len(join_keys) > 1 else [0]
        packers = [(i, _PACKERS.get(self.types[join_keys[i]].name)) for i in order]
        if any(pack is None for _, pack in packers):
            return None
        head = [struct.pack("<I", len(join_keys))]
        for i in order:
            name = join_keys[i].encode()
            head.append(struct.pack("<II", _PROTO_TYPES["STRING"], len(name)) + name)
        return b"".join(head), packers  # type: ignore[return-value]

    def _feast_key(self, join_keys: tuple[str, ...], values: tuple[Any, ...]) -> bytes:
        protos = [python_values_to_proto_values([v], self.types[k])[0] for k, v in zip(join_keys, values)]
        return _redis_key(self.project, EntityKey(join_keys=list(join_keys), entity_values=protos), 3)


class ValueDecoder:
    """ValueProto bytes -> the JSON value Feast's server would send, cached by the bytes (values repeat a lot)."""

    def __init__(self) -> None:
        self._values = BoundedCache()
        self._stamps = BoundedCache()

    def value(self, raw: bytes | None) -> Any:
        if raw is None:
            return None
        if len(raw) == 9 and raw[0] == _DOUBLE_TAG:  # a double (the common case, and rarely repeated): 8 bytes LE
            number = _unpack_double(raw, 1)[0]
            if number - number == 0.0:  # finite; NaN and infinities take Feast's path, which spells them out
                return number
        try:
            return self._values[raw]
        except KeyError:
            return self._values.put(raw, _value_to_native(Value.FromString(raw)))

    def columns(self, rows: list[list[bytes | None] | None], width: int) -> list[list[Any]]:
        """One list per feature of `value` of each row's raw values, None throughout for a None row.

        When every raw value is a finite double (the common case), the rows are unpacked by one
        call over their joined bytes instead of a Python call per value.
        """
        shown = [row for row in rows if row is not None]
        found = _double_columns(list(chain.from_iterable(shown)), width)
        if found is None:
            value = self.value
            return [[None if row is None else value(row[f]) for row in rows] for f in range(width)]
        if len(shown) == len(rows):
            return found
        return [_spread(rows, column) for column in found]

    def timestamp(self, raw: bytes) -> tuple[int, str]:
        """(epoch ms, RFC 3339 text as Feast prints it) of a `_ts:<view>` field."""
        try:
            return self._stamps[raw]
        except KeyError:
            stamp = Timestamp.FromString(raw)
            return self._stamps.put(raw, (stamp.seconds * 1000 + stamp.nanos // 1_000_000, _timestamp_to_str(stamp)))


_second_texts = BoundedCache()
_STRUCT_LIMIT = 64  # up to this many values struct beats numpy, whose fixed cost dominates small requests


def _double_columns(flat: list[bytes | None], width: int) -> list[list[float]] | None:
    """The columns of row-major double ValueProtos (a tag byte, then 8 bytes LE each), all finite; else None."""
    count = len(flat)
    try:
        joined = b"".join(flat)  # type: ignore[arg-type]
    except TypeError:  # a missing value
        return None
    if not count or len(joined) != 9 * count or min(map(len, flat)) != 9:  # type: ignore[arg-type]
        return None
    if joined[::9] != bytes((_DOUBLE_TAG,)) * count:
        return None
    if count <= _STRUCT_LIMIT:
        numbers = _doubles(count).unpack(joined)
        if not math.isfinite(sum(numbers)):  # NaN or an infinity (or an overflowing sum): Feast's path decides
            return None
        if count == width:  # one row
            return [[number] for number in numbers]
        return [list(numbers[f::width]) for f in range(width)]
    array = np.frombuffer(joined, _DOUBLE_VALUE)["number"]
    if not np.isfinite(array).all():
        return None
    return array.reshape(count // width, width).T.tolist()  # type: ignore[no-any-return]


@functools.cache  # at most _STRUCT_LIMIT of them
def _doubles(count: int) -> struct.Struct:
    return struct.Struct("<" + "xd" * count)


def _spread(rows: list[Any], values: list[Any]) -> list[Any]:
    """`values` of the rows that are not None, in order, and None for the others."""
    shown = iter(values)
    return [None if row is None else next(shown) for row in rows]


def format_ms(ts_ms: int) -> str:
    """Epoch ms as Feast prints event timestamps (`_timestamp_to_str`: no fraction, or 3 digits for ms, `Z`).

    Feast's function builds a datetime per call, a visible share of a one-entity request; the text of
    the second is cached instead (requests arrive many per second).
    """
    seconds, ms = divmod(ts_ms, 1000)
    try:
        base = _second_texts[seconds]
    except KeyError:
        base = _second_texts.put(seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{base}.{ms:03d}Z" if ms else base + "Z"


def now_ms() -> int:
    return time.time_ns() // 1_000_000
