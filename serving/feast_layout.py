"""Feast's Redis layout for batch views, built with Feast's own helpers so keys and values match byte for byte.

Hash key = serialized entity key (v3) + project; field = murmur3 of `<view>:<feature>`;
value = a ValueProto; `_ts:<view>` = a protobuf Timestamp. Values are rendered to JSON
the way Feast's feature server renders them (`feast.feature_server_utils`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from feast.feature_server_utils import _timestamp_to_str, _value_to_native
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

EPOCH = "1970-01-01T00:00:00Z"
_CACHE_LIMIT = 200_000


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
    """Feast Redis keys of entities, cached: (join keys, values) -> key bytes."""

    def __init__(self, project: str, key_types: dict[str, str]) -> None:
        self.project = project
        self.types = {key: ValueType[name] for key, name in key_types.items()}
        self._cache = BoundedCache()

    def __call__(self, join_keys: tuple[str, ...], values: tuple[Any, ...]) -> bytes:
        cached = self._cache.get((join_keys, values))
        if cached is not None:
            return cached
        protos = [python_values_to_proto_values([v], self.types[k])[0] for k, v in zip(join_keys, values)]
        key = _redis_key(self.project, EntityKey(join_keys=list(join_keys), entity_values=protos), 3)
        return self._cache.put((join_keys, values), key)


class ValueDecoder:
    """ValueProto bytes -> the JSON value Feast's server would send, cached by the bytes (values repeat a lot)."""

    def __init__(self) -> None:
        self._values = BoundedCache()
        self._stamps = BoundedCache()

    def value(self, raw: bytes | None) -> Any:
        if raw is None:
            return None
        try:
            return self._values[raw]
        except KeyError:
            return self._values.put(raw, _value_to_native(Value.FromString(raw)))

    def timestamp(self, raw: bytes) -> tuple[int, str]:
        """(epoch ms, RFC 3339 text as Feast prints it) of a `_ts:<view>` field."""
        try:
            return self._stamps[raw]
        except KeyError:
            stamp = Timestamp.FromString(raw)
            return self._stamps.put(raw, (stamp.seconds * 1000 + stamp.nanos // 1_000_000, _timestamp_to_str(stamp)))


def format_ms(ts_ms: int) -> str:
    """Epoch ms as Feast prints event timestamps (adaptive fractional digits, `Z`)."""
    return _timestamp_to_str(Timestamp(seconds=ts_ms // 1000, nanos=ts_ms % 1000 * 1_000_000))


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)
