"""Event-time sessions against the brute-force reference, in any arrival order."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from featurestream_native import EntityEvents, SessionFold

from featurestream.windows.sessions import (
    COUNT,
    LAST,
    START,
    SessionState,
    absorb,
    decode,
    encode,
    prune,
    session_at,
)
from tests.reference import agrees, ref_accepted, ref_session

GAP = 100
AGGS = {"clicks": ("item", "count"), "spent": ("price", "sum"), "avg_price": ("price", "mean"),
        "cheapest": ("price", "min"), "dearest": ("price", "max"), "price_sd": ("price", "stddev"),
        "price_var": ("price", "var"), "last_item": ("item", "last")}
FUNCTIONS = {name: function for name, (_, function) in AGGS.items()}


AGGREGATIONS = [(name, function, column) for name, (column, function) in AGGS.items()]
FOLD = SessionFold(AGGREGATIONS, GAP, absorb)


def apply(state: SessionState, e: dict[str, Any]) -> SessionState:
    row = {column: e.get(column) for column, _ in AGGS.values()}
    events = EntityEvents(list(row))
    events.add((1,), e["partition"], e["offset"], e["ts"], row)
    FOLD.fold(state, events, (1,), {e["partition"]: -1})
    return state


def build(events: list[dict[str, Any]]) -> SessionState:
    state: SessionState = []
    for e in events:
        apply(state, e)
    return state


def assert_matches(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    assert actual.keys() == expected.keys()
    for name in ("session_start", "session_event_count", "session_duration_s"):
        assert actual[name] == expected[name], name
    for name, function in FUNCTIONS.items():
        assert agrees(function, actual[name], expected[name], magnitude=1000), (name, actual[name], expected[name])


def assert_well_formed(state: SessionState, n_events: int) -> None:
    assert sum(s[COUNT] for s in state) == n_events
    for s in state:
        assert s[START] <= s[LAST]
    for a, b in zip(state, state[1:]):
        assert b[START] - a[LAST] > GAP


prices = st.one_of(st.none(), st.integers(1, 1000), st.floats(0, 1000, allow_nan=False))


@st.composite
def streams(draw: st.DrawFn, max_size: int = 40, span: int = 2000) -> list[dict[str, Any]]:
    """Events of one entity from three partitions, in a random arrival order, dense enough to merge sessions."""
    n = draw(st.integers(0, max_size))
    # Coarse times on half the streams put events exactly G apart, the boundary that still joins.
    times = draw(st.sampled_from([st.integers(0, span), st.integers(0, span // 50).map(lambda k: k * 50)]))
    offsets = [0, 0, 0]
    events = []
    for _ in range(n):
        partition = draw(st.integers(0, 2))
        offsets[partition] += 1
        events.append({"ts": draw(times), "partition": partition, "offset": offsets[partition],
                       "item": draw(st.one_of(st.none(), st.sampled_from(["a", "b", "c"]))),
                       "price": draw(prices)})
    return draw(st.permutations(events))


@given(streams(), st.integers(0, 400))
def test_any_arrival_order_equals_the_reference_after_the_last_event(events: list[dict[str, Any]],
                                                                     after: int) -> None:
    state = build(events)
    assert_well_formed(state, len(events))
    t = max((e["ts"] for e in events), default=0) + after
    features, exact = session_at(state, t, GAP, FUNCTIONS)
    assert exact
    assert_matches(features, ref_session(events, GAP, AGGS, t))


@given(streams(), st.integers(-50, 2100))
def test_any_time_is_exact_or_flagged(events: list[dict[str, Any]], t: int) -> None:
    features, exact = session_at(build(events), t, GAP, FUNCTIONS)
    expected = ref_session(events, GAP, AGGS, t)
    if exact:
        assert_matches(features, expected)
    else:  # t inside a session's span: that session is active, though stored with its later events
        assert expected["session_event_count"] > 0
        assert features["session_start"] == expected["session_start"]


def in_partition_order(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same interleaving of partitions, each partition's events in offset order: what a consumer sees."""
    queues = {p: sorted((e for e in events if e["partition"] == p), key=lambda e: e["offset"], reverse=True)
              for p in {e["partition"] for e in events}}
    return [queues[e["partition"]].pop() for e in events]


@given(streams(max_size=60, span=4000), st.integers(0, 300), st.integers(0, 400))
def test_pruning_at_the_watermark_changes_nothing_later(events: list[dict[str, Any]], lateness: int,
                                                        after: int) -> None:
    # A partition's watermark only passes events of that partition already applied: offset order matters here.
    accepted = ref_accepted(in_partition_order(events), lateness)
    newest: dict[int, int] = {}
    state: SessionState = []
    for e in accepted:
        apply(state, e)
        newest[e["partition"]] = max(newest.get(e["partition"], e["ts"]), e["ts"])
        if len(newest) == 3:  # the entity's watermark: the lowest over the partitions it hears from
            prune(state, min(newest.values()) - lateness, GAP)
    t = max((e["ts"] for e in accepted), default=0) + after
    features, exact = session_at(state, t, GAP, FUNCTIONS)
    assert exact
    assert_matches(features, ref_session(accepted, GAP, AGGS, t))


def test_prune_drops_only_sessions_that_cannot_change() -> None:
    state = build([{"ts": ts, "partition": 0, "offset": ts} for ts in (0, 50, 300, 600, 650)])
    assert [(s[START], s[LAST]) for s in state] == [(0, 50), (300, 300), (600, 650)]
    assert [s[START] for s in prune([list(s) for s in state], 400, GAP)] == [300, 600]
    assert [s[START] for s in prune([list(s) for s in state], 401, GAP)] == [600]
    assert [s[START] for s in prune([list(s) for s in state], 10_000, GAP)] == [600]  # the newest stays


def test_an_event_in_the_gap_merges_two_sessions() -> None:
    state = build([{"ts": 0, "partition": 0, "offset": 1, "price": 1},
                   {"ts": 180, "partition": 0, "offset": 2, "price": 5}])
    assert len(state) == 2
    apply(state, {"ts": 90, "partition": 1, "offset": 1, "price": 3})
    assert [(s[START], s[LAST], s[COUNT]) for s in state] == [(0, 180, 3)]
    features, exact = session_at(state, 200, GAP, FUNCTIONS)
    assert exact
    assert features["session_start"] == 0
    assert features["session_event_count"] == 3
    assert features["session_duration_s"] == 0.18
    assert (features["spent"], features["cheapest"], features["dearest"], features["avg_price"]) == (9, 1, 5, 3.0)


def test_out_of_order_events_extend_a_session_at_either_end() -> None:
    state = build([{"ts": 500, "partition": 0, "offset": 1}])
    apply(state, {"ts": 420, "partition": 0, "offset": 2})
    apply(state, {"ts": 600, "partition": 0, "offset": 3})
    apply(state, {"ts": 450, "partition": 0, "offset": 4})
    assert [(s[START], s[LAST], s[COUNT]) for s in state] == [(420, 600, 4)]
    apply(state, {"ts": 700, "partition": 0, "offset": 5})  # exactly G after the end: joins
    apply(state, {"ts": 320, "partition": 0, "offset": 6})  # exactly G before the start: joins
    assert [(s[START], s[LAST], s[COUNT]) for s in state] == [(320, 700, 6)]
    apply(state, {"ts": 219, "partition": 0, "offset": 7})  # G + 1 before the start: a session of its own
    assert [(s[START], s[LAST], s[COUNT]) for s in state] == [(219, 219, 1), (320, 700, 6)]


def test_no_active_session_is_count_zero_and_nulls() -> None:
    state = build([{"ts": 1000, "partition": 0, "offset": 1, "price": 2, "item": "a"}])
    expected = {"session_start": None, "session_event_count": 0, "session_duration_s": None,
                **{name: None for name in FUNCTIONS}}
    assert session_at(state, 1101, GAP, FUNCTIONS) == (expected, True)  # the gap has passed
    assert session_at(state, 999, GAP, FUNCTIONS) == (expected, True)  # before the first event
    assert session_at([], 5, GAP, FUNCTIONS) == (expected, True)
    features, _ = session_at(state, 1100, GAP, FUNCTIONS)
    assert (features["session_event_count"], features["last_item"], features["price_sd"]) == (1, "a", None)


def test_last_breaks_event_time_ties_by_partition_then_offset() -> None:
    tied = [{"ts": 10, "partition": 2, "offset": 1, "item": "p2"},
            {"ts": 10, "partition": 1, "offset": 8, "item": "p1-8"},
            {"ts": 10, "partition": 2, "offset": 0, "item": "p2-0"}]
    for arrival in (tied, tied[::-1]):
        features, _ = session_at(build(arrival), 10, GAP, FUNCTIONS)
        assert features["last_item"] == "p2"


@given(streams())
def test_encode_round_trips_and_keeps_working(events: list[dict[str, Any]]) -> None:
    half = len(events) // 2
    state = decode(encode(build(events[:half])))
    for e in events[half:]:
        apply(state, e)
    assert decode(encode(state)) == state == build(events)


def test_encode_is_compact_keeps_the_string_order_keys_and_reads_the_json_of_older_versions() -> None:
    state: SessionState = []
    events = EntityEvents(["x", "y"])
    events.add((1,), 0, 7, 5, {"x": "a", "y": 2.5})
    SessionFold([("n", "count", "x"), ("l", "last", "y")], GAP, absorb).fold(state, events, (1,), {0: -1})
    data = encode(state)
    written_as_json = b'[[5,5,1,{"n":{"n":1},"l":{"lv":2.5,"lk":"0000000000000050000000000000000000000007"}}]]'
    assert decode(data) == state == decode(written_as_json)
    assert len(data) < len(written_as_json)


def test_a_min_or_max_of_timestamps_survives_the_encoding() -> None:
    """JSON gave a timestamp back as a string, which the next event's datetime could not be compared with:
    the writer stopped at every read of such a state (after a restart, say)."""
    fold = SessionFold([("first", "min", "t"), ("latest", "max", "t")], GAP, absorb)
    state: SessionState = []
    for offset, ts in enumerate((50, 10, 30)):
        events = EntityEvents(["t"])
        events.add((1,), 0, offset, ts, {"t": datetime.fromtimestamp(ts, UTC)})
        fold.fold(state, events, (1,), {0: offset - 1})
        state = decode(encode(state))
    features, _ = session_at(state, 60, GAP, {"first": "min", "latest": "max"})
    assert (features["first"], features["latest"]) == (datetime.fromtimestamp(10, UTC), datetime.fromtimestamp(50, UTC))
