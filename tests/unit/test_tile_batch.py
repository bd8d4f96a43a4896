"""What a micro-batch asks TILE_MERGE to write: no tile the same call would prune."""

from __future__ import annotations

import dataclasses
from functools import cache
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from featurestream.definitions import AggregationSpec, StreamViewSpec, check_repo
from featurestream.online.keys import offset_field, parse_tile_field
from featurestream.online.series import LAST_KEY, order_key, series_retention_ms, view_series
from materializers.stream.tile_batch import TileBatch, encode_value
from tests.conftest import FEATURE_REPO

MINUTE, HOUR = 60_000, 3_600_000
NEWEST = 1_790_000_000_000 - 1_790_000_000_000 % HOUR + 30 * MINUTE


def _row(ts_ms: int) -> dict[str, Any]:
    return {"user_id": 7, "event_id": f"e{ts_ms}", "item_id": 3, "price": 2.5, "event_type": "purchase",
            "purchase_value": 2.5, "viewed_price": None, "view_id": None, "purchase_id": f"e{ts_ms}"}


@cache
def _demo_view() -> StreamViewSpec:
    return check_repo(FEATURE_REPO).stream_views["user_activity"]


def _written_tiles(times: list[int]) -> set[tuple[str, int]]:
    view = _demo_view()
    batch = TileBatch("p", view)
    for offset, ts in enumerate(times):
        batch.add((7,), 0, offset, ts, _row(ts))
    [(_, update, _)] = batch.calls()
    fields = {parse_tile_field(x) for x in update if isinstance(x, str)}
    return {(f"{f[0]}|{f[1]}", f[2]) for f in fields if f is not None}


def test_tiles_that_left_every_window_by_the_keys_newest_event_are_not_written() -> None:
    view = _demo_view()
    span = series_retention_ms(view)["event_id|60000"] + MINUTE  # what TILE_MERGE keeps of a minute tile
    dead = NEWEST - span  # a tile starting here is pruned by the call that writes NEWEST
    tiles = _written_tiles([dead, dead + MINUTE, NEWEST])
    assert ("event_id|60000", dead) not in tiles
    assert ("event_id|60000", dead + MINUTE) in tiles
    assert ("event_id|60000", NEWEST) in tiles
    # The same events' hourly tiles live a day: all are written.
    hour = dead - dead % HOUR
    assert {("event_id|3600000", hour), ("event_id|3600000", NEWEST - NEWEST % HOUR)} <= tiles


def test_a_key_whose_events_are_all_recent_writes_every_tile() -> None:
    times = [NEWEST - 30 * MINUTE, NEWEST - 5 * MINUTE, NEWEST]
    tiles = _written_tiles(times)
    assert {("event_id|60000", t - t % MINUTE) for t in times} <= tiles
    assert {("purchase_value|60000", t - t % MINUTE) for t in times} <= tiles


# -- the whole update against a brute force, for every component ------------------------------------------

ALL_FUNCTIONS = (
    AggregationSpec("n5", "x", "count", 5 * MINUTE, MINUTE),
    AggregationSpec("sd1h", "x", "stddev", HOUR, MINUTE),
    AggregationSpec("lo1h", "x", "min", HOUR, 5 * MINUTE),
    AggregationSpec("hi1d", "x", "max", 24 * HOUR, HOUR),
    AggregationSpec("last1d", "y", "last", 24 * HOUR, HOUR),
)


@cache
def _view() -> StreamViewSpec:
    demo = _demo_view()
    return dataclasses.replace(demo, name="every_function", join_keys=("k",), aggregations=ALL_FUNCTIONS, udf=None)


def _split(update: list[Any]) -> dict[str, Any]:
    """A key's flat update as {newest, segments: [(offset field, first, last, set of ops)]}."""
    segments, p = [], 2
    for _ in range(update[1]):
        field, first, last, length = update[p:p + 4]
        ops, i, body = [], 0, update[p + 4:p + 4 + length]
        while i < len(body):
            width = 5 if body[i] == "l" else 3
            ops.append(tuple(body[i:i + width]))
            i += width
        segments.append((field, first, last, sorted(ops, key=repr)))
        p += 4 + length
    assert p == len(update)
    return {"newest": update[0], "segments": segments}


def _expected(view: StreamViewSpec, events: list[tuple[int, int, int, int, dict[str, Any]]]) -> dict[str, Any]:
    """Brute force, one key: per partition the ops of every tile its events touch that outlives the call."""
    retention = series_retention_ms(view)
    newest = max(ts for _, _, _, ts, _ in events)
    segments = []
    for partition in sorted({p for _, p, _, _, _ in events}):
        mine = [(o, ts, row) for _, p, o, ts, row in events if p == partition]
        ops = []
        for series in view_series(view):
            slide, column = series.slide_ms, series.column
            span = retention[f"{column}|{slide}"] + slide
            tiles: dict[int, list[tuple[int, int, Any]]] = {}
            for offset, ts, row in mine:
                if row[column] is not None and ts - ts % slide > newest - span:
                    tiles.setdefault(ts - ts % slide, []).append((offset, ts, row[column]))
            for tile, hits in tiles.items():
                name = f"{column}|{slide}|{tile}|"
                values = [v for _, _, v in hits]
                total, squares = 0.0, 0.0
                if {"s", "q"} & set(series.components):
                    for v in values:
                        total += v
                        squares += v * v
                for component in series.components:
                    if component == "n":
                        ops.append(("i", name + "n", len(values)))
                    elif component == "s":
                        ops.append(("f", name + "s", total))
                    elif component == "q":
                        ops.append(("f", name + "q", squares))
                    elif component == "lo":
                        ops.append(("<", name + "lo", repr(min(values))))
                    elif component == "hi":
                        ops.append((">", name + "hi", repr(max(values))))
                    else:
                        offset, ts, value = max(hits, key=lambda h: (h[1], h[0]))
                        ops.append(("l", name + "lv", encode_value(value), name + LAST_KEY,
                                    order_key(ts, partition, offset)))
        offsets = [o for o, _, _ in mine]
        segments.append((offset_field(view.source.topic, partition), min(offsets), max(offsets),
                         sorted(ops, key=repr)))
    return {"newest": newest, "segments": segments}


numbers = st.one_of(st.none(), st.integers(-50, 50), st.floats(-50, 50, allow_nan=False), st.just(7), st.just(7.0))


@st.composite
def streams(draw: st.DrawFn) -> list[tuple[int, int, int, int, dict[str, Any]]]:
    """(key, partition, offset, event time, row) in arrival order: offsets rise per partition."""
    spread = draw(st.sampled_from([MINUTE, HOUR, 30 * HOUR]))
    offsets = [0, 0, 0]
    out = []
    for _ in range(draw(st.integers(1, 60))):
        partition = draw(st.integers(0, 2))
        offsets[partition] += draw(st.integers(1, 3))
        ts = NEWEST - draw(st.integers(0, spread))
        out.append((draw(st.integers(0, 3)), partition, offsets[partition], ts,
                    {"k": 0, "x": draw(numbers), "y": draw(st.one_of(st.none(), st.integers(0, 9), st.text(max_size=3)))}))
    return out


@settings(max_examples=150, deadline=None)
@given(streams())
def test_every_keys_update_equals_the_brute_force(events: list[tuple[int, int, int, int, dict[str, Any]]]) -> None:
    view = _view()
    batch = TileBatch("p", view)
    for key, partition, offset, ts, row in events:
        batch.add((key,), partition, offset, ts, row)
    calls = batch.calls()
    assert [k for k, _, _ in calls] == [batch.key((k,)) for k in dict.fromkeys(e[0] for e in events)]
    for key, update, segments in calls:
        mine = [e for e in events if batch.key((e[0],)) == key]
        assert _split(update) == _expected(view, mine)
        # Resent event by event (a partly applied segment), each event is its own segment with its own ops.
        for partition, segment in segments:
            resent = _split(batch.single_event_update(partition, segment))
            singles = [e for e in mine if e[1] == partition]
            assert resent["newest"] == segment.max_ts == max(e[3] for e in singles)
            assert resent["segments"] == [
                _expected_single(view, e, segment.max_ts) for e in singles]


def _expected_single(view: StreamViewSpec, event: tuple[int, int, int, int, dict[str, Any]], newest: int) -> Any:
    """One event's own segment, its tiles judged against the resent segment's newest event."""
    anchor = (event[0], event[1], -1, newest, {"k": 0, "x": None, "y": None})  # sets newest, adds no op
    [segment] = _expected(view, [event, anchor])["segments"]
    return (segment[0], event[2], event[2], segment[3])
