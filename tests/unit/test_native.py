"""The Rust kernels' contract beyond what the brute-force comparisons check: Python's number semantics,
clear errors, redis-py's RESP."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import pytest
import redis
from featurestream_native import EntityEvents, SessionFold, TilePlan, pack_commands
from msgspec import msgpack

from featurestream.online.series import decode_tiles
from featurestream.windows.sessions import absorb
from tests.partials import order_key

MINUTE = 60_000
T0 = 1_790_000_000_000 - 1_790_000_000_000 % MINUTE
ENTITY = (7,)


def _sum_plan() -> TilePlan:
    return TilePlan([("x|60000|s", "x", MINUTE, 60 * MINUTE, "add", 2, "s")])


def _batch(events: list[tuple[int, int, int, Any]]) -> EntityEvents:
    """One entity's events, (partition, offset, event time, row) in arrival order."""
    batch = EntityEvents(list(dict.fromkeys(column for *_, row in events for column in row)))
    for partition, offset, ts, row in events:
        batch.add(ENTITY, partition, offset, ts, row)
    return batch


def _fold_into(fold: Any, state: Any, events: list[tuple[int, int, int, Any]]) -> dict[int, int] | None:
    """Fold all the events (nothing applied before) with a TilePlan's or SessionFold's fold."""
    return fold(state, _batch(events), ENTITY, {partition: -1 for partition, *_ in events})


def _fold_state(plan: TilePlan, events: list[tuple[int, int, int, Any]], blob: bytes | None = None) -> Any:
    state = plan.decode(blob)
    _fold_into(plan.fold, state, events)
    return state


def _fold(plan: TilePlan, events: list[tuple[int, int, int, Any]], blob: bytes | None = None) -> dict:
    """Fold into the state stored as `blob`; what the reader would decode of the result."""
    return decode_tiles(plan.encode(_fold_state(plan, events, blob)))


def test_sums_of_ints_stay_ints_and_one_leaving_64_bits_is_refused() -> None:
    big = 2**62
    assert _fold(_sum_plan(), [(0, 1, T0 + 1, {"x": big}), (0, 2, T0 + 2, {"x": big - 1})]) == {
        "newest": T0 + 2, "x|60000|s": [T0, 2**63 - 1]}
    with pytest.raises(OverflowError, match="leaves 64 bits"):
        _fold(_sum_plan(), [(0, 1, T0 + 1, {"x": big}), (0, 2, T0 + 2, {"x": big})])
    with pytest.raises(OverflowError, match="leaves 64 bits"):
        _fold(_sum_plan(), [(0, 1, T0 + 1, {"x": 2**64})])


def test_ints_and_floats_add_and_compare_as_in_python() -> None:
    [start, total] = _fold(_sum_plan(), [(0, 1, T0, {"x": 1}), (0, 2, T0 + 1, {"x": 0.5}), (0, 3, T0 + 2, {"x": True})])["x|60000|s"]
    assert (start, total, type(total)) == (T0, 2.5, float)
    [_, total] = _fold(_sum_plan(), [(0, 1, T0, {"x": 1}), (0, 2, T0 + 1, {"x": True})])["x|60000|s"]
    assert (total, type(total)) == (2, int)  # a bool adds as the int it is
    highest = TilePlan([("x|60000|hi", "x", MINUTE, 60 * MINUTE, "max", 2, "hi")])
    assert _fold(highest, [(0, 1, T0, {"x": 2}), (0, 2, T0 + 1, {"x": 2.5}), (0, 3, T0 + 2, {"x": 1})])["x|60000|hi"] == [T0, 2.5]
    assert _fold(highest, [(0, 1, T0, {"x": "b"}), (0, 2, T0 + 1, {"x": "c"})])["x|60000|hi"] == [T0, "c"]
    with pytest.raises(TypeError, match="'>' not supported between instances of 'str' and 'int'") as raised:
        _fold(highest, [(0, 1, T0, {"x": 2}), (0, 2, T0 + 1, {"x": "c"})])
    assert raised.value.__notes__ == ["while folding events into tile series x|60000|hi"]
    with pytest.raises(TypeError, match="unsupported operand type"):
        _fold(_sum_plan(), [(0, 1, T0, {"x": 2}), (0, 2, T0 + 1, {"x": "c"})])


def test_min_and_max_compare_any_values_as_python_does() -> None:
    """Datetimes (a timestamp column), ints past 63 bits stored by older code, and ints against floats
    beyond 2**53, where a float conversion would lose the order."""
    highest = TilePlan([("x|60000|hi", "x", MINUTE, 60 * MINUTE, "max", 2, "hi")])
    lowest = TilePlan([("x|60000|lo", "x", MINUTE, 60 * MINUTE, "min", 2, "lo")])
    early, late = datetime(2026, 11, 28, 9, tzinfo=UTC), datetime(2026, 11, 28, 10, tzinfo=UTC)
    events = [(0, 1, T0, {"x": early}), (0, 2, T0 + 1, {"x": late}), (0, 3, T0 + 2, {"x": early})]
    assert _fold(highest, events)["x|60000|hi"] == [T0, late]
    assert _fold(lowest, events)["x|60000|lo"] == [T0, early]
    stored = msgpack.encode({"x|60000|hi": [T0, 2**63 + 5]})
    assert _fold(highest, [(0, 1, T0, {"x": 7})], stored)["x|60000|hi"] == [T0, 2**63 + 5]
    assert _fold(highest, [(0, 1, T0, {"x": float(2**53)}), (0, 2, T0 + 1, {"x": 2**53 + 1})])["x|60000|hi"] == [
        T0, 2**53 + 1]


def test_a_max_keeps_the_first_of_equal_values_and_ignores_nan_as_python_does() -> None:
    highest = TilePlan([("x|60000|hi", "x", MINUTE, 60 * MINUTE, "max", 2, "hi")])
    [_, held] = _fold(highest, [(0, 1, T0, {"x": -0.0}), (0, 2, T0 + 1, {"x": 0.0})])["x|60000|hi"]
    assert math.copysign(1, held) == -1
    assert _fold(highest, [(0, 1, T0, {"x": 1.0}), (0, 2, T0 + 1, {"x": math.nan})])["x|60000|hi"] == [T0, 1.0]
    [_, held] = _fold(highest, [(0, 1, T0, {"x": math.nan}), (0, 2, T0 + 1, {"x": 2.0})])["x|60000|hi"]
    assert math.isnan(held)


def test_bools_stay_bools_through_an_encoding() -> None:
    highest = TilePlan([("x|60000|hi", "x", MINUTE, 60 * MINUTE, "max", 2, "hi")])
    stored = highest.encode(_fold_state(highest, [(0, 1, T0, {"x": False})]))
    [_, held] = _fold(highest, [(0, 2, T0 + 1, {"x": False})], stored)["x|60000|hi"]
    assert held is False


def test_rows_may_be_any_mapping() -> None:
    assert _fold(_sum_plan(), [(0, 1, T0, MappingProxyType({"x": 2}))])["x|60000|s"] == [T0, 2]


def test_a_state_folds_only_with_a_plan_of_the_same_series() -> None:
    state = _sum_plan().decode(None)
    _fold_into(_sum_plan().fold, state, [(0, 1, T0, {"x": 1})])  # another plan object, same series: fine
    with pytest.raises(ValueError, match="decoded for other series"):
        _fold_into(_last_plan().fold, state, [(0, 1, T0, {"y": 1})])
    with pytest.raises(ValueError, match="decoded for other series"):
        _last_plan().encode(state)


def test_nulls_are_skipped_and_an_all_null_series_is_not_stored() -> None:
    assert _fold(_sum_plan(), [(0, 1, T0 + 1, {"x": None})]) == {"newest": T0 + 1}


def test_a_row_without_a_kept_column_raises_key_error_naming_it() -> None:
    with pytest.raises(KeyError, match="no column `x`"):
        EntityEvents(["x"]).add(ENTITY, 0, 1, T0, {"y": 1})
    with pytest.raises(KeyError, match="no column `x`"):
        EntityEvents(["x"]).add(ENTITY, 0, 1, T0, MappingProxyType({"y": 1}))
    with pytest.raises(KeyError, match="keep no column x"):
        _fold(_sum_plan(), [(0, 1, T0, {"y": 1})])


def test_events_keep_the_columns_values_as_python_had_them() -> None:
    values = {"i": 2**63 - 1, "big": 2**64, "f": -0.0, "b": True, "s": "é", "none": None,
              "when": datetime(2026, 1, 1, tzinfo=UTC)}
    batch = EntityEvents(list(values))
    batch.add(ENTITY, 0, 1, T0, MappingProxyType({**values, "ignored": object()}))
    ((_, _, _, kept),) = batch.fresh(ENTITY, {0: -1})
    assert kept == values and [type(v) for v in kept.values()] == [type(v) for v in values.values()]
    assert batch.columns == list(values)


def test_other_integers_and_reals_are_kept_as_python_s_and_other_numbers_are_not() -> None:
    """numpy's numbers (a pandas-minded udf returns them) are ints and floats to the folds; a sum refuses a
    Decimal, which is neither."""
    import numpy as np

    values = {"i": np.int64(5), "u": np.uint64(2**64 - 1), "f": np.float32(0.5), "d": Decimal("1.5")}
    batch = EntityEvents(list(values))
    batch.add(ENTITY, 0, 1, T0, values)
    ((_, _, _, kept),) = batch.fresh(ENTITY, {0: -1})
    assert kept == {"i": 5, "u": 2**64 - 1, "f": 0.5, "d": Decimal("1.5")}
    assert [type(v) for v in kept.values()] == [int, np.uint64, float, Decimal]
    EntityEvents(["i", "f"], ["i", "f"]).add(ENTITY, 0, 1, T0, values)
    with pytest.raises(TypeError, match="column `d` holds a Decimal"):
        EntityEvents(["d"], ["d"]).add(ENTITY, 0, 1, T0, values)


def test_a_min_or_max_takes_only_values_its_state_gives_back_as_they_were() -> None:
    """A naive datetime or a Decimal would come back from MessagePack a string, which the next value could not
    be compared with."""
    events = EntityEvents(["t"], [], ["t"])
    for value in (datetime(2026, 1, 1, tzinfo=UTC), "a", 1.5, 2, True, None):
        events.add(ENTITY, 0, 1, T0, {"t": value})
    for value, held in ((datetime(2026, 1, 1), "a datetime without a timezone"), (Decimal("1.5"), "a Decimal"),
                        (2**70, f"{2**70}, which leaves 64 bits")):
        with pytest.raises(TypeError, match=f"column `t` holds {held}, but a view takes its min or max"):
            events.add(ENTITY, 0, 2, T0, {"t": value})
    assert len(events.fresh(ENTITY, {0: -1})) == 6


def test_a_plan_with_an_unknown_kind_or_a_wrong_stride_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown slot kind 'median'"):
        TilePlan([("x|60000|s", "x", MINUTE, MINUTE, "median", 2, "s")])
    with pytest.raises(ValueError, match="stride 2 do not fit"):
        TilePlan([("y|60000|lv", "y", MINUTE, MINUTE, "last", 2, "lv")])


def _last_plan() -> TilePlan:
    return TilePlan([("y|60000|lv", "y", MINUTE, 60 * MINUTE, "last", 3, "lv")])


def test_last_keeps_the_value_of_the_greatest_order_key_whatever_the_arrival_order() -> None:
    state = _fold(_last_plan(), [(0, 5, T0 + 9, {"y": "newer"}), (1, 3, T0 + 2, {"y": "older"})])
    assert state["y|60000|lv"] == [T0, "newer", f"{T0 + 9:015d}{0:06d}{5:019d}"]


@pytest.mark.parametrize(("ts", "partition", "offset"), [(T0, 0, 0), (T0 + 7, 123_456, 2**63 - 1), (-5, 3, 9),
                                                         (10**15 + 1, 1, 1), (T0, 1_234_567, 1)])
def test_order_keys_are_python_s_whatever_the_widths(ts: int, partition: int, offset: int) -> None:
    [_, _, key] = _fold(_last_plan(), [(partition, offset, ts, {"y": 1})])["y|60000|lv"]
    assert key == order_key(ts, partition, offset)


def test_last_keeps_values_of_any_type_msgpack_holds() -> None:
    when = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    blob = _last_plan().encode(_last_plan().decode(msgpack.encode({"y|60000|lv": [T0, when, "k"]})))
    assert decode_tiles(blob)["y|60000|lv"] == [T0, when, "k"]
    state = _fold(_last_plan(), [(0, 1, T0 + MINUTE, {"y": [1, "a"]})], blob)
    assert state["y|60000|lv"] == [T0, when, "k", T0 + MINUTE, [1, "a"], f"{T0 + MINUTE:015d}{0:06d}{1:019d}"]


def test_decode_drops_series_the_plan_no_longer_keeps_and_refuses_what_is_not_tiles() -> None:
    stored = msgpack.encode({"newest": T0, "x|60000|s": [T0, 3], "gone|60000|s": [T0, 1]})
    assert decode_tiles(_sum_plan().encode(_sum_plan().decode(stored))) == {"newest": T0, "x|60000|s": [T0, 3]}
    for blob, message in ((b"\x81\xa5x", "not MessagePack"), (msgpack.encode([1]), "not a MessagePack map"),
                          (msgpack.encode({"x|60000|s": [T0]}), "not whole tiles"),
                          (msgpack.encode({"x|60000|s": ["t", 1]}), "not an int"),
                          (msgpack.encode({"newest": "t"}), "newest that is not an int")):
        with pytest.raises(ValueError, match=message):
            _sum_plan().decode(blob)


def test_a_tile_starting_exactly_span_before_the_newest_event_is_dropped_or_never_made() -> None:
    later = T0 + 60 * MINUTE  # the plan's span: the tile starting at T0 has left every window
    kept = {"newest": later, "x|60000|s": [later, 2]}
    plan = _sum_plan()
    state = plan.decode(None)
    _fold_into(plan.fold, state, [(0, 1, T0, {"x": 1})])
    _fold_into(plan.fold, state, [(0, 2, later, {"x": 2})])
    assert decode_tiles(plan.encode(state)) == kept
    assert _fold(plan, [(0, 2, later, {"x": 2}), (0, 3, T0, {"x": 1})]) == kept


def test_a_session_fold_refuses_an_unknown_function_or_a_gap_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="unknown aggregation function 'median'"):
        SessionFold([("m", "median", "x")], MINUTE, absorb)
    with pytest.raises(ValueError, match="gap must be positive, not 0 ms"):
        SessionFold([("s", "sum", "x")], 0, absorb)


def test_a_session_fold_raises_key_error_for_events_without_the_column_and_sums_ints_exactly() -> None:
    fold = SessionFold([("s", "sum", "x")], MINUTE, absorb)
    with pytest.raises(KeyError, match="keep no column x"):
        _fold_into(fold.fold, [], [(0, 1, T0, {"y": 1})])
    state: list = []
    big = 2**62 + 1
    _fold_into(fold.fold, state, [(0, 1, T0, {"x": big}), (0, 2, T0 + 1, {"x": big})])
    assert state == [[T0, T0 + 1, 2, {"s": {"s": 2 * big}}]]
    assert type(state[0][3]["s"]["s"]) is int


def test_entity_events_keep_arrival_order_and_ascending_partitions() -> None:
    batch = EntityEvents(["x"])
    for entity, partition, offset in [((2,), 3, 10), ((1,), 1, 5), ((2,), 0, 7), ((2,), 3, 11)]:
        batch.add(entity, partition, offset, T0 + offset, {"x": offset})
    assert len(batch) == 2 and batch.entities() == [(2,), (1,)]
    assert batch.partitions((2,)) == [0, 3] and batch.partitions((1,)) == [1]
    assert [e[:3] for e in batch.fresh((2,), {0: -1, 3: 10})] == [(0, 7, T0 + 7), (3, 11, T0 + 11)]
    with pytest.raises(KeyError):
        batch.partitions((9,))
    with pytest.raises(KeyError, match="no applied offset given for partition 3"):
        batch.fresh((2,), {0: -1})


def test_a_fold_applies_only_events_past_the_stored_offsets_and_returns_the_new_fences() -> None:
    """A replay after a crash: events at or below a partition's applied offset were counted before."""
    batch = EntityEvents(["x"])
    for partition, offset in [(0, 4), (1, 8), (0, 5), (1, 9), (0, 6)]:
        batch.add(ENTITY, partition, offset, T0 + offset, {"x": 1})
    plan = _sum_plan()
    state = plan.decode(None)
    assert plan.fold(state, batch, ENTITY, {0: 5, 1: 7}) == {0: 6, 1: 9}
    assert decode_tiles(plan.encode(state))["x|60000|s"] == [T0, 3]  # offsets 8, 9 and 6
    assert plan.fold(state, batch, ENTITY, {0: 6, 1: 9}) is None
    sessions: list = []
    fold = SessionFold([("s", "sum", "x")], MINUTE, absorb)
    assert fold.fold(sessions, batch, ENTITY, {0: 4, 1: 9}) == {0: 6}
    assert sessions[0][2] == 2  # offsets 5 and 6


def test_commands_are_packed_as_redis_py_packs_them() -> None:
    commands = [("EVALSHA", "f" * 40, 2, "k|é", b"\x00\r\n", 0, -1, 2**63 - 1, -(2**63), 2**70, 1.5, -0.25, b""),
                ("HMGET", "key", "v", "s"), ("PING",)]
    assert pack_commands(commands) == b"".join(redis.Connection().pack_commands(commands))
    assert pack_commands([]) == b""
    for bad in (True, None, [1]):
        with pytest.raises(TypeError, match="Invalid input of type"):
            pack_commands([("SET", "k", bad)])


def test_squares_take_bools_and_ints_as_numbers() -> None:
    squares = TilePlan([("x|60000|q", "x", MINUTE, 60 * MINUTE, "add", 2, "q")])
    folded = _fold(squares, [(0, 1, T0, {"x": True}), (0, 2, T0 + 1, {"x": 3}), (0, 3, T0 + 2, {"x": False})])
    assert folded["x|60000|q"] == [T0, 10.0]
