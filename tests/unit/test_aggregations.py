"""Mergeable partials: reference equality, merge laws, nulls, ties, variance edge cases."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from featurestream.online.series import FUNCTION_COMPONENTS
from featurestream.windows.aggregations import (
    COMPONENTS,
    LAST_ORDER_KEY,
    finalize,
    merge,
)
from tests.partials import accumulate, order_key
from tests.reference import agrees, ref_window

FUNCTIONS = sorted(COMPONENTS)
WHOLE = (2 * 10**9, 10**9, 10**9 - 1)  # window, slide and t covering every event time below


def test_components_cover_every_function_with_redis_mergeable_kinds() -> None:
    assert set(COMPONENTS) == {"count", "sum", "mean", "min", "max", "stddev", "var", "last"}
    for components in COMPONENTS.values():
        assert all(kind in ("add", "min", "max", "last") for _, kind in components)
    # The Redis layout stores exactly these components.
    assert {f: tuple(c for c, _ in comps) for f, comps in COMPONENTS.items()} == FUNCTION_COMPONENTS


values = st.one_of(st.none(), st.integers(-1000, 1000), st.floats(-1000, 1000, allow_nan=False))


@st.composite
def events(draw: st.DrawFn, max_size: int = 30) -> list[dict[str, Any]]:
    """Distinct (partition, offset) events, many sharing an event time."""
    keys = draw(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 100)), unique=True, max_size=max_size))
    return [{"ts": draw(st.integers(0, 5)), "partition": p, "offset": o, "value": draw(values)} for p, o in keys]


def partial_of(function: str, evs: list[dict[str, Any]]) -> dict[str, Any]:
    partial: dict[str, Any] = {}
    for e in evs:
        accumulate(function, partial, e["value"], (e["ts"], e["partition"], e["offset"]))
    return partial


@given(events(), st.sampled_from(FUNCTIONS))
def test_accumulate_equals_the_reference(evs: list[dict[str, Any]], function: str) -> None:
    assert agrees(function, finalize(function, partial_of(function, evs)), ref_window(evs, function, *WHOLE),
                  magnitude=1000)


@given(events(), st.sampled_from(FUNCTIONS), st.data())
def test_merging_any_split_equals_the_reference(evs: list[dict[str, Any]], function: str, data: st.DataObject) -> None:
    parts: list[list[dict[str, Any]]] = [[] for _ in range(4)]
    for e in evs:
        parts[data.draw(st.integers(0, 3))].append(e)
    merged: dict[str, Any] = {}
    for part in parts:
        merged = merge(function, merged, partial_of(function, part))
    assert agrees(function, finalize(function, merged), ref_window(evs, function, *WHOLE), magnitude=1000)


@given(events(), st.sampled_from(FUNCTIONS), st.data())
def test_merge_is_commutative_and_associative(evs: list[dict[str, Any]], function: str, data: st.DataObject) -> None:
    parts: list[list[dict[str, Any]]] = [[], [], []]
    for e in evs:
        parts[data.draw(st.integers(0, 2))].append(e)
    pa, pb, pc = (partial_of(function, p) for p in parts)
    assert merge(function, pa, pb) == merge(function, pb, pa)
    left = finalize(function, merge(function, merge(function, pa, pb), pc))
    right = finalize(function, merge(function, pa, merge(function, pb, pc)))
    assert agrees(function, left, right, magnitude=1000)


@given(events(), st.sampled_from(FUNCTIONS))
def test_empty_partial_is_the_identity(evs: list[dict[str, Any]], function: str) -> None:
    p = partial_of(function, evs)
    assert merge(function, {}, p) == p == merge(function, p, {})


def test_merge_does_not_modify_its_inputs() -> None:
    a, b = {"n": 1, "s": 2.0, "q": 4.0}, {"n": 2, "s": 3.0, "q": 5.0}
    assert merge("var", a, b) == {"n": 3, "s": 5.0, "q": 9.0}
    assert a == {"n": 1, "s": 2.0, "q": 4.0} and b == {"n": 2, "s": 3.0, "q": 5.0}


def test_merge_keeps_only_the_functions_components() -> None:
    # Tiles of a series shared by several functions hold the union of their components.
    assert merge("count", {"n": 2, "s": 1.0, "q": 1.0}, {"n": 3}) == {"n": 5}


def test_nulls_are_ignored() -> None:
    for function in FUNCTIONS:
        assert accumulate(function, None, None, (0, 0, 0)) == {}
        assert finalize(function, partial_of(function, [{"ts": 0, "partition": 0, "offset": 0, "value": None}])) \
            == finalize(function, {})
    evs = [{"ts": i, "partition": 0, "offset": i, "value": v} for i, v in enumerate([3, None, 5, None])]
    assert finalize("count", partial_of("count", evs)) == 2
    assert finalize("mean", partial_of("mean", evs)) == 4.0
    assert finalize("last", partial_of("last", evs)) == 5


def test_empty_values() -> None:
    assert {f: finalize(f, {}) for f in FUNCTIONS} == {
        "count": 0, "sum": 0, "mean": None, "min": None, "max": None, "var": None, "stddev": None, "last": None}


@pytest.mark.parametrize("arrival", [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]])
def test_last_breaks_event_time_ties_by_partition_then_offset(arrival: list[int]) -> None:
    tied = [(100, 0, 9, "p0-o9"), (100, 1, 3, "p1-o3"), (100, 1, 4, "p1-o4"), (99, 2, 50, "earlier")]
    for key_of in (lambda ts, p, o: (ts, p, o), order_key):  # tuples in Python, fixed-width strings in Redis
        partial: dict[str, Any] = {}
        for i in arrival:
            ts, p, o, v = tied[i]
            accumulate("last", partial, v, key_of(ts, p, o))
        assert finalize("last", partial) == "p1-o4"


def test_last_merge_keeps_the_greatest_order_key() -> None:
    early = {"lv": 1.0, LAST_ORDER_KEY: (5, 1, 7)}
    late = {"lv": 2.0, LAST_ORDER_KEY: (5, 2, 0)}
    assert merge("last", early, late) == merge("last", late, early) == late


def test_sum_keeps_ints_exact_and_floats_float() -> None:
    ints = partial_of("sum", [{"ts": 0, "partition": 0, "offset": i, "value": 10**15 + i} for i in range(3)])
    assert finalize("sum", ints) == 3 * 10**15 + 3 and isinstance(finalize("sum", ints), int)
    floats = partial_of("sum", [{"ts": 0, "partition": 0, "offset": i, "value": 0.5} for i in range(3)])
    assert finalize("sum", floats) == 1.5


def test_variance_is_sample_variance() -> None:
    evs = [{"ts": 0, "partition": 0, "offset": i, "value": v} for i, v in enumerate([2, 4, 4, 4, 5, 5, 7, 9])]
    assert finalize("var", partial_of("var", evs)) == pytest.approx(32 / 7)
    assert finalize("stddev", partial_of("stddev", evs)) == pytest.approx((32 / 7) ** 0.5)
    assert finalize("var", partial_of("var", evs[:1])) is None
    assert finalize("stddev", {}) is None


def test_variance_clamps_rounding_below_zero() -> None:
    # 0.1 three times: s*s/n rounds above q, so the raw formula is slightly negative.
    partial = {"n": 3, "s": 0.1 + 0.1 + 0.1, "q": 0.01 + 0.01 + 0.01}
    assert partial["q"] - partial["s"] ** 2 / 3 < 0
    assert finalize("var", partial) == 0.0
    assert finalize("stddev", partial) == 0.0


def test_variance_with_a_large_mean_stays_close() -> None:
    evs = [{"ts": 0, "partition": 0, "offset": i, "value": 1e6 + v} for i, v in enumerate([0.25, 0.5, 0.75, 1.0])]
    assert finalize("var", partial_of("var", evs)) == pytest.approx(ref_window(evs, "var", *WHOLE), abs=1e-3)


def test_unknown_function_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown aggregation function 'median'"):
        accumulate("median", None, 1, (0, 0, 0))
    with pytest.raises(ValueError, match="unknown aggregation function 'median'"):
        finalize("median", {})
