"""The batch materializer's column encoders give exactly the bytes of Feast's serializers and redis-py's packer."""

from __future__ import annotations

import math

import pyarrow as pa
import redis
from feast import types
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import python_values_to_proto_values
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from materializers.batch.encode import entity_keys, timestamps, value_protos
from materializers.batch.redis_writer import stored_nanos
from materializers.batch.resp import commands, grouped, wire

INT64 = st.integers(-(2**63), 2**63 - 1)
INT32 = st.integers(-(2**31), 2**31 - 1)
# Arrow type and Hypothesis values of each Feast type with a fast path, plus one (UnixTimestamp) without.
COLUMNS = {
    "Int64": (pa.int64(), INT64),
    "Int32": (pa.int32(), INT32),
    "Float64": (pa.float64(), st.floats()),
    "Float32": (pa.float32(), st.floats(width=32)),
    "String": (pa.string(), st.text()),
    "Bool": (pa.bool_(), st.booleans()),
    "UnixTimestamp": (pa.timestamp("ms", tz="UTC"), st.integers(0, 253_402_300_799_999)),
}
EDGES = {
    "Int64": [0, 1, -1, 127, 128, 300, 2**31 - 1, -(2**31), 2**62, 2**63 - 1, -(2**63), None],
    "Float64": [0.0, -0.0, 1.5, -2.25, 1e300, 5e-324, math.inf, -math.inf, math.nan, None],
    "String": ["", "a", "ünïcødé", None, "x" * 300, "y" * 20_000],
}


def feasts(values: list, feast_type: str) -> list[bytes]:
    value_type = getattr(types, feast_type).to_value_type()
    return [p.SerializeToString() for p in python_values_to_proto_values(values, value_type)]


def check_column(feast_type: str, values: list) -> None:
    column = pa.array(values, COLUMNS[feast_type][0])
    assert value_protos(column, feast_type).to_pylist() == feasts(column.to_pylist(), feast_type), feast_type


@given(st.sampled_from(sorted(COLUMNS)).flatmap(
    lambda name: st.tuples(st.just(name), st.lists(st.none() | COLUMNS[name][1], max_size=40))))
def test_values_equal_feasts(case: tuple[str, list]) -> None:
    check_column(*case)


def test_edge_values_equal_feasts() -> None:
    for feast_type, values in EDGES.items():
        check_column(feast_type, values)
    check_column("Int32", [2**31 - 1, -(2**31), -1, None])
    chunked = pa.chunked_array([[1.5, None], [2.5]], pa.float64())
    assert value_protos(chunked, "Float64").to_pylist() == feasts([1.5, None, 2.5], "Float64")


KEY_KINDS = {"int64": (pa.int64(), INT64, "int64_val"), "int32": (pa.int32(), INT32, "int32_val"),
             "string": (pa.string(), st.text(), "string_val")}


@given(st.lists(st.tuples(st.text(min_size=1, max_size=8), st.sampled_from(sorted(KEY_KINDS))),
                min_size=1, max_size=3, unique_by=lambda pair: pair[0]).flatmap(
    lambda keys: st.tuples(st.just(keys), st.lists(st.tuples(*(KEY_KINDS[kind][1] for _, kind in keys)),
                                                   min_size=1, max_size=20))))
def test_entity_keys_equal_feasts(case: tuple[list[tuple[str, str]], list[tuple]]) -> None:
    keys, rows = case
    names = [name for name, _ in keys]
    columns = [pa.array([row[i] for row in rows], KEY_KINDS[kind][0]) for i, (_, kind) in enumerate(keys)]
    expected = [serialize_entity_key(EntityKey(join_keys=names, entity_values=[
        Value(**{KEY_KINDS[kind][2]: v}) for (_, kind), v in zip(keys, row)]), 3) + b"proj" for row in rows]
    assert entity_keys(names, columns, "proj").to_pylist() == expected


@given(st.lists(st.integers(0, 2**63 - 1), min_size=1, max_size=40))
def test_timestamps_equal_protobufs(nanos: list[int]) -> None:
    encoded, totals = timestamps(pa.array([0, 1, *nanos], pa.timestamp("ns", tz="UTC")))
    protos = [Timestamp(seconds=n // 10**9, nanos=n % 10**9) for n in [0, 1, *nanos]]
    assert encoded.to_pylist() == [p.SerializeToString() for p in protos]
    assert totals.tolist() == [0, 1, *nanos]
    assert stored_nanos([None, *encoded.to_pylist()[1:]]).tolist() == [0, 1, *nanos]


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=20), st.binary(max_size=20))
def test_commands_equal_redis_pys(keys: list[bytes], field: bytes) -> None:
    column = pa.array(keys, pa.binary())
    packer = redis.Connection()
    expected = b"".join(b"".join(packer.pack_command("HSET", key, field, key)) for key in keys)
    assert bytes(wire(commands(b"HSET", column, field, column))) == expected
    assert bytes(wire(commands(b"HSET", column, field, column).slice(1))) == expected[
        len(b"".join(packer.pack_command("HSET", keys[0], field, keys[0]))):]


def test_commands_of_fixed_width_columns_equal_redis_pys() -> None:
    keys = [b"k%03d" % i for i in range(50)]
    packer = redis.Connection()
    expected = b"".join(b"".join(packer.pack_command("HGET", key, "_ts:v")) for key in keys)
    assert bytes(wire(commands(b"HGET", pa.array(keys, pa.binary()), b"_ts:v"))) == expected


@given(st.lists(st.binary(max_size=40), min_size=1, max_size=30), st.integers(1, 8))
def test_grouped_commands_equal_redis_pys(keys: list[bytes], size: int) -> None:
    packer = redis.Connection()
    expected = b"".join(b"".join(packer.pack_command("EXISTS", *keys[start:start + size]))
                        for start in range(0, len(keys), size))
    assert bytes(wire(grouped(b"EXISTS", pa.array(keys, pa.binary()), size))) == expected
