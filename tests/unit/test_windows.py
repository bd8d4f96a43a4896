"""Tile math, and tiled window aggregation against the brute-force reference."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from msgspec import msgpack

from featurestream.definitions import AggregationSpec, StreamSourceSpec, StreamViewSpec
from featurestream.online.reader import WindowReader
from featurestream.online.series import LAST_KEY, view_series
from featurestream.windows.aggregations import COMPONENTS
from featurestream.windows.tiles import tile_start, validate_window, window_bounds, window_tiles
from tests.partials import accumulate, order_key
from tests.reference import agrees, ref_window

MINUTE = 60_000
HOUR = 60 * MINUTE


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def test_design_example_one_hour_window_one_minute_slide() -> None:
    t = ms("2024-05-01T10:30:20")
    assert window_bounds(t, HOUR, MINUTE) == (ms("2024-05-01T09:31:00"), t)
    tiles = window_tiles(t, HOUR, MINUTE)
    assert len(tiles) == 60
    assert tiles[0] == ms("2024-05-01T09:31:00")
    assert tiles[-1] == ms("2024-05-01T10:30:00")


def test_tile_start_floors_negative_times() -> None:
    assert tile_start(0, MINUTE) == 0
    assert tile_start(MINUTE - 1, MINUTE) == 0
    assert tile_start(MINUTE, MINUTE) == MINUTE
    assert tile_start(-1, MINUTE) == -MINUTE
    assert tile_start(-MINUTE, MINUTE) == -MINUTE


@given(st.integers(-10**13, 10**13), st.integers(1, 10**7))
def test_tile_start_is_the_floor(ts: int, slide: int) -> None:
    start = tile_start(ts, slide)
    assert start <= ts < start + slide
    assert start % slide == 0


@given(st.integers(-10**12, 10**12), st.integers(1, 50), st.integers(1, 10**6), st.integers(-10**6, 10**6))
def test_window_tiles_cover_exactly_the_window_bounds(t: int, tiles: int, slide: int, delta: int) -> None:
    window = tiles * slide
    lo, hi = window_bounds(t, window, slide)
    covered = window_tiles(t, window, slide)
    assert len(covered) == tiles
    ts = t + delta
    assert (lo <= ts <= hi) == (tile_start(ts, slide) in covered and ts <= t)


def test_validate_window_accepts_a_dividing_slide() -> None:
    validate_window(HOUR, MINUTE)
    validate_window(HOUR, HOUR)


@pytest.mark.parametrize(
    ("window", "slide", "message"),
    [(HOUR, 7 * MINUTE, r"slide 7m \(420000 ms\) does not divide window 1h \(3600000 ms\)"),
     (MINUTE, HOUR, "does not divide"),
     (HOUR, 0, "slide must be positive"),
     (-HOUR, MINUTE, "window must be positive"),
     (HOUR, 1.5, "whole number of milliseconds")],
)
def test_validate_window_rejects(window: Any, slide: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_window(window, slide)


values = st.one_of(st.none(), st.integers(-1000, 1000), st.floats(-1000, 1000, allow_nan=False))


@st.composite
def streams(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Events over a few tiles, with equal times across partitions, in a random arrival order."""
    n = draw(st.integers(0, 40))
    events = []
    offsets = [0, 0, 0]
    for _ in range(n):
        partition = draw(st.integers(0, 2))
        offsets[partition] += 1
        events.append({"ts": draw(st.integers(0, 3000)), "partition": partition, "offset": offsets[partition],
                       "value": draw(values)})
    return draw(st.permutations(events))


def encoded_tiles(view: StreamViewSpec, tiles: dict[int, dict[str, Any]]) -> bytes:
    """A one-column view's encoded state holding these tiles (partials as `accumulate` builds them)."""
    state: dict[str, list[Any]] = {}
    for series in view_series(view):
        for start in sorted(tiles):
            partial = tiles[start]
            if series.component in partial:  # a tile of null values only is never written
                slots = [order_key(*partial[s]) if s == LAST_KEY else partial[s] for s in series.slots]
                state.setdefault(series.name, []).extend([start, *slots])
    return msgpack.encode(state)


@given(streams(), st.sampled_from([(1000, 100), (600, 200), (500, 500)]), st.integers(-200, 3500))
def test_reader_over_tiles_equals_the_reference(events: list[dict[str, Any]], window: tuple[int, int], t: int) -> None:
    """Every function of one series, read by the serving reader from an encoded state."""
    window_ms, slide_ms = window
    functions = sorted(COMPONENTS)
    source = StreamSourceSpec("s", "topic", "localhost:9092", "ts", {"value": "double"}, 0, None)
    view = StreamViewSpec("v", ("k",), source, "ts",
                          tuple(AggregationSpec(f, "value", f, window_ms, slide_ms) for f in functions))
    per_function: dict[tuple[str, int], dict[str, Any]] = {}
    for e in events:
        for function in functions:
            partial = per_function.setdefault((function, tile_start(e["ts"], slide_ms)), {})
            accumulate(function, partial, e["value"], (e["ts"], e["partition"], e["offset"]))
    tiles: dict[int, dict[str, Any]] = {}  # functions sharing a component (count's and mean's n) agree on it
    for (_, start), partial in per_function.items():
        tiles.setdefault(start, {}).update(partial)
    # A tile answers for its whole span: read it at a t past its stored events, as serving at "now" does.
    t = max([t] + [e["ts"] for e in events if tile_start(e["ts"], slide_ms) == tile_start(t, slide_ms)])
    reader = WindowReader(view)
    actual, newest = reader.evaluate(encoded_tiles(view, tiles), reader.frame(t))
    for function, value in zip(functions, actual):
        assert agrees(function, value, ref_window(events, function, window_ms, slide_ms, t), magnitude=1000)
    started = [start for start, partial in tiles.items() if partial and start <= t]
    assert newest == (max(started) + slide_ms if started else None)
