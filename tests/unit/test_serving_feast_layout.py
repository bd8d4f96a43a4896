"""The serving API's fast Feast-layout encoders give exactly the bytes and values of Feast's own code."""

from __future__ import annotations

from feast.feature_server_utils import _timestamp_to_str, _value_to_native
from feast.infra.online_stores.helpers import _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from serving.feast_layout import EntityKeys, ValueDecoder, format_ms

TYPES = {"user_id": "INT64", "shard": "INT32", "sku": "STRING", "day": "UNIX_TIMESTAMP"}
PROTO_FIELD = {"INT64": "int64_val", "INT32": "int32_val", "STRING": "string_val", "UNIX_TIMESTAMP": "unix_timestamp_val"}
VALUES = {"INT64": st.integers(-(2**63), 2**63 - 1), "INT32": st.integers(-(2**31), 2**31 - 1),
          "STRING": st.text(), "UNIX_TIMESTAMP": st.integers(-(2**63), 2**63 - 1)}
KEYS = EntityKeys("proj_x", TYPES)


@given(st.lists(st.sampled_from(sorted(TYPES)), min_size=1, max_size=4, unique=True).flatmap(
    lambda keys: st.tuples(st.just(tuple(keys)), st.tuples(*(VALUES[TYPES[k]] for k in keys)))))
def test_entity_keys_equal_feasts(case: tuple[tuple[str, ...], tuple]) -> None:
    join_keys, values = case
    protos = [Value(**{PROTO_FIELD[TYPES[k]]: v}) for k, v in zip(join_keys, values)]
    assert KEYS(join_keys, values) == _redis_key("proj_x", EntityKey(join_keys=list(join_keys), entity_values=protos), 3)


@given(st.one_of(
    st.floats().map(lambda x: Value(double_val=x)), st.floats(width=32).map(lambda x: Value(float_val=x)),
    st.integers(-(2**63), 2**63 - 1).map(lambda x: Value(int64_val=x)), st.text().map(lambda x: Value(string_val=x)),
    st.booleans().map(lambda x: Value(bool_val=x)), st.just(Value()),
    st.lists(st.floats(allow_nan=False)).map(lambda x: Value(double_list_val={"val": x}))))
def test_decoded_values_equal_feasts(value: Value) -> None:
    assert ValueDecoder().value(value.SerializeToString()) == _value_to_native(value)


@given(st.integers(-(10**13), 253_402_300_799_999))
def test_formatted_times_equal_feasts(ts_ms: int) -> None:
    stamp = Timestamp(seconds=ts_ms // 1000, nanos=ts_ms % 1000 * 1_000_000)
    assert format_ms(ts_ms) == _timestamp_to_str(stamp)


_CELL = st.one_of(st.floats().map(lambda x: Value(double_val=x)),
                  st.integers(-(2**63), 2**63 - 1).map(lambda x: Value(int64_val=x)), st.just(None))


def assert_columns_equal_feasts(rows: list[list[Value | None] | None]) -> None:
    width = len(next(row for row in rows if row is not None))
    raws = [None if row is None else [None if v is None else v.SerializeToString() for v in row] for row in rows]
    decoded = ValueDecoder().columns(raws, width)
    expected = [[None if row is None or row[f] is None else _value_to_native(row[f]) for row in rows]
                for f in range(width)]
    assert [[repr(x) for x in column] for column in decoded] == [[repr(x) for x in column] for column in expected]


_FINITE = st.floats(allow_nan=False, allow_infinity=False).map(lambda x: Value(double_val=x))


@given(st.integers(1, 8).flatmap(lambda width: st.lists(st.one_of(
    st.just(None), st.lists(_CELL, min_size=width, max_size=width),
    st.lists(_FINITE, min_size=width, max_size=width)), min_size=1, max_size=16)).filter(
    lambda rows: any(row is not None for row in rows)))
def test_decoded_columns_equal_feasts(rows: list[list[Value | None] | None]) -> None:
    """Rows of finite doubles are unpacked at once (struct when few, numpy when many), anything else value
    by value; all equal Feast's."""
    assert_columns_equal_feasts(rows)


@given(st.lists(st.lists(_FINITE, min_size=10, max_size=10), min_size=7, max_size=40), st.data())
def test_many_decoded_columns_equal_feasts(rows: list[list[Value]], data: st.DataObject) -> None:
    """Past the struct limit, with some rows missing."""
    missing = data.draw(st.sets(st.integers(0, len(rows) - 1), max_size=len(rows) - 1))
    assert_columns_equal_feasts([None if i in missing else row for i, row in enumerate(rows)])
