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


@given(st.lists(st.one_of(st.floats().map(lambda x: Value(double_val=x)),
                          st.integers(-(2**63), 2**63 - 1).map(lambda x: Value(int64_val=x)),
                          st.just(None)), min_size=1, max_size=12))
def test_decoded_rows_equal_feasts(row: list[Value | None]) -> None:
    raws = [None if v is None else v.SerializeToString() for v in row]
    decoded = ValueDecoder().values(raws)
    assert [repr(x) for x in decoded] == [repr(None if v is None else _value_to_native(v)) for v in row]
