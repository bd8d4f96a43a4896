"""The Rust folds' contract beyond what the brute-force comparisons check: Python's number semantics and
clear errors."""

from __future__ import annotations

import pytest
from featurestream_native import SessionFold, TilePlan

from featurestream.windows.sessions import absorb

MINUTE = 60_000
T0 = 1_790_000_000_000 - 1_790_000_000_000 % MINUTE


def _sum_plan() -> TilePlan:
    return TilePlan([("x|60000|s", "x", MINUTE, 60 * MINUTE, "add", 2, "s")])


def test_sums_of_ints_stay_exact_python_ints() -> None:
    state: dict = {}
    big = 2**62 + 1
    _sum_plan().fold(state, [(0, 1, T0 + 1, {"x": big}), (0, 2, T0 + 2, {"x": big})], T0 + 2)
    [start, total] = state["x|60000|s"]
    assert start == T0
    assert type(total) is int and total == 2 * big


def test_nulls_are_skipped_and_an_all_null_series_is_not_stored() -> None:
    state: dict = {}
    _sum_plan().fold(state, [(0, 1, T0 + 1, {"x": None})], T0 + 1)
    assert state == {}


def test_a_row_without_the_column_raises_key_error_naming_it() -> None:
    with pytest.raises(KeyError, match="'x'"):
        _sum_plan().fold({}, [(0, 1, T0, {"y": 1})], T0)


def test_a_plan_with_an_unknown_kind_or_a_wrong_stride_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown slot kind 'median'"):
        TilePlan([("x|60000|s", "x", MINUTE, MINUTE, "median", 2, "s")])
    with pytest.raises(ValueError, match="stride 2 do not fit"):
        TilePlan([("y|60000|lv", "y", MINUTE, MINUTE, "last", 2, "lv")])


def test_last_keeps_the_value_of_the_greatest_order_key_whatever_the_arrival_order() -> None:
    state: dict = {}
    plan = TilePlan([("y|60000|lv", "y", MINUTE, 60 * MINUTE, "last", 3, "lv")])
    plan.fold(state, [(0, 5, T0 + 9, {"y": "newer"}), (1, 3, T0 + 2, {"y": "older"})], T0 + 9)
    assert state["y|60000|lv"] == [T0, "newer", f"{T0 + 9:015d}{0:06d}{5:019d}"]


def test_a_tile_starting_exactly_span_before_the_newest_event_is_dropped_or_never_made() -> None:
    later = T0 + 60 * MINUTE  # the plan's span: the tile starting at T0 has left every window
    kept = {"x|60000|s": [later, 2]}
    state: dict = {}
    plan = _sum_plan()
    plan.fold(state, [(0, 1, T0, {"x": 1})], T0)
    plan.fold(state, [(0, 2, later, {"x": 2})], later)
    assert state == kept
    state = {}
    plan.fold(state, [(0, 2, later, {"x": 2}), (0, 3, T0, {"x": 1})], later)
    assert state == kept


def test_a_session_fold_refuses_an_unknown_function_or_a_gap_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="unknown aggregation function 'median'"):
        SessionFold([("m", "median", "x")], MINUTE, absorb)
    with pytest.raises(ValueError, match="gap must be positive, not 0 ms"):
        SessionFold([("s", "sum", "x")], 0, absorb)


def test_a_session_fold_raises_key_error_for_a_row_without_the_column_and_sums_ints_exactly() -> None:
    fold = SessionFold([("s", "sum", "x")], MINUTE, absorb)
    with pytest.raises(KeyError, match="'x'"):
        fold.fold([], [(0, 1, T0, {"y": 1})])
    state: list = []
    big = 2**62 + 1
    fold.fold(state, [(0, 1, T0, {"x": big}), (0, 2, T0 + 1, {"x": big})])
    assert state == [[T0, T0 + 1, 2, {"s": {"s": 2 * big}}]]
    assert type(state[0][3]["s"]["s"]) is int
