"""A windowed view's micro-batches merged into an entity's tiles: equal to a brute force over the events,
whatever the batching, the partitions and the replays after a crash, with no tile kept past its window."""

from __future__ import annotations

import dataclasses
import math
from functools import cache
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from featurestream.definitions import AggregationSpec, StreamViewSpec, check_repo
from featurestream.online.series import NEWEST as NEWEST_FIELD
from featurestream.online.reader import window_features
from featurestream.online.series import (
    LAST_KEY, Tiles, decode_tiles, series_retention_ms, view_series,
)
from materializers.stream.tile_batch import TileBatch
from tests.conftest import FEATURE_REPO
from tests.partials import order_key

MINUTE, HOUR = 60_000, 3_600_000
NEWEST = 1_790_000_000_000 - 1_790_000_000_000 % HOUR + 30 * MINUTE
Event = tuple[int, int, int, int, dict[str, Any]]  # key, partition, offset, event time, row


@cache
def _demo_view() -> StreamViewSpec:
    return check_repo(FEATURE_REPO).stream_views["user_activity"]


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


class Store:
    """What Redis would hold per key (state and fences), written as the sink writes it."""

    def __init__(self, view: StreamViewSpec) -> None:
        self.view = view
        self.keys: dict[str, tuple[Any, dict[int, int]]] = {}  # key -> (state, applied)
        self.blobs: dict[str, bytes] = {}  # what was written, decoded as the reader decodes it

    def apply(self, events: list[Event]) -> None:
        batch = TileBatch("p", self.view)
        for key, partition, offset, ts, row in events:
            batch.events.add((key,), partition, offset, ts, row)
        for entity in batch.events.entities():
            key = batch.key(entity)
            state, held = self.keys.get(key, (batch.decode(None), {}))
            applied = {p: held.get(p, -1) for p in batch.events.partitions(entity)}
            update = batch.update(entity, state, applied)
            if update is not None:
                blob, offsets = update
                self.keys[key] = (batch.decode(blob), {**held, **applied, **offsets})
                self.blobs[key] = blob


def _expected(view: StreamViewSpec, events: list[Event]) -> Tiles:
    """Brute force, one key: every tile still inside its series' retention, slot by slot."""
    retention = series_retention_ms(view)
    newest = max(ts for _, _, _, ts, _ in events)
    state: Tiles = {NEWEST_FIELD: newest}
    for series in view_series(view):
        span = retention[f"{series.column}|{series.slide_ms}"] + series.slide_ms
        tiles: dict[int, list[tuple[int, int, int, Any]]] = {}
        for _, partition, offset, ts, row in events:
            start = ts - ts % series.slide_ms
            if row[series.column] is not None and start > newest - span:
                tiles.setdefault(start, []).append((ts, partition, offset, row[series.column]))
        flat: list[Any] = []
        for start in sorted(tiles):
            values = [v for *_, v in tiles[start]]
            ts, partition, offset, last = max(tiles[start], key=lambda hit: hit[:3])
            slots = {"n": lambda: len(values), "s": lambda: math.fsum(values),
                     "q": lambda: math.fsum(v * v for v in values), "lo": lambda: min(values),
                     "hi": lambda: max(values), "lv": lambda: last, LAST_KEY: lambda: order_key(ts, partition, offset)}
            flat += [start, *(slots[slot]() for slot in series.slots)]
        if flat:
            state[series.name] = flat
    return state


def _same(actual: list[Any], expected: list[Any]) -> bool:
    return len(actual) == len(expected) and all(
        a == e if not isinstance(e, float) else math.isclose(a, e, rel_tol=1e-9, abs_tol=1e-9)
        for a, e in zip(actual, expected))


numbers = st.one_of(st.none(), st.integers(-50, 50), st.floats(-50, 50, allow_nan=False), st.just(7), st.just(7.0))


@st.composite
def streams(draw: st.DrawFn) -> list[Event]:
    """Events in arrival order: offsets rise per partition; event times out of order over a chosen spread."""
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


@settings(max_examples=200, deadline=None)
@given(streams(), st.data())
def test_batches_and_replays_give_the_brute_force_tiles(events: list[Event], data: st.DataObject) -> None:
    """Micro-batches cut anywhere; after some of them a crash replays from an earlier record (a prefix of
    the replayed records was applied, maybe only part of a key's segment): nothing counts twice."""
    view = _view()
    store = Store(view)
    done = 0
    while done < len(events):
        end = data.draw(st.integers(done + 1, len(events)))
        store.apply(events[done:end])
        done = data.draw(st.integers(0, end)) if data.draw(st.booleans()) else end  # a crash: resume earlier
    batch = TileBatch("p", view)
    for key in {e[0] for e in events}:
        mine = [e for e in events if e[0] == key]
        actual = decode_tiles(store.blobs[batch.key((key,))])
        expected = _expected(view, mine)
        assert actual.keys() == expected.keys()
        assert actual[NEWEST_FIELD] == expected.pop(NEWEST_FIELD)
        for name, tiles in expected.items():
            assert _same(actual[name], tiles), name
            if name.endswith(("|lo", "|hi")):  # of 7 and 7.0, the one that came first: an int or a float is served
                assert [type(v) for v in actual[name][1::2]] == [type(v) for v in tiles[1::2]], name
            if name.endswith("|q"):  # squares are floats always: a big int's would overflow MessagePack
                assert all(type(square) is float for square in actual[name][1::2]), name


def test_a_lagging_partitions_old_events_keep_no_tile_past_its_window() -> None:
    """A batch holding only events older than the key's newest prunes against the stored tiles too."""
    view = _demo_view()
    row = {"user_id": 7, "event_id": "e", "item_id": 3, "price": 2.5, "event_type": "purchase",
           "purchase_value": 2.5, "viewed_price": None, "view_id": None, "purchase_id": "e"}
    span = series_retention_ms(view)["event_id|60000"] + MINUTE
    store = Store(view)
    store.apply([(7, 0, 1, NEWEST - span + MINUTE, row), (7, 0, 2, NEWEST, row)])
    store.apply([(7, 1, 1, NEWEST - 2 * span, row)])  # within lateness of partition 1's own watermark
    [blob] = store.blobs.values()
    minute_series = next(s for s in view_series(view) if s.name.startswith("event_id|60000|"))
    starts = decode_tiles(blob)[minute_series.name][::minute_series.stride]
    assert starts == [NEWEST - span + MINUTE - (NEWEST - span + MINUTE) % MINUTE, NEWEST - NEWEST % MINUTE]


def test_a_function_added_over_the_same_column_and_slide_leaves_the_others_tiles_alone() -> None:
    """Adding `mean` next to a `sum` of the same column and slide: the sum's tiles stay, the mean's
    count starts with the events after the change."""
    demo = _demo_view()
    before = dataclasses.replace(demo, name="v", join_keys=("k",), udf=None,
                                 aggregations=(AggregationSpec("s1h", "x", "sum", HOUR, MINUTE),))
    after = dataclasses.replace(before, aggregations=(*before.aggregations,
                                                      AggregationSpec("m1h", "x", "mean", HOUR, MINUTE)))
    store = Store(before)
    store.apply([(0, 0, 1, NEWEST - 2 * MINUTE, {"x": 2.0}), (0, 0, 2, NEWEST - MINUTE, {"x": 3.0})])
    store.view = after
    [(key, (_, applied))] = store.keys.items()
    store.keys[key] = (TileBatch("p", after).decode(store.blobs[key]), applied)
    store.apply([(0, 0, 3, NEWEST, {"x": 5.0})])
    values = window_features(after, store.blobs[key], NEWEST)
    assert values["s1h"] == 10.0
    # The mean's count holds only the event after the change; its sum is the shared one (as in a
    # field-per-component layout): a changed definition needs `featurestream rebuild` to be exact.
    assert values["m1h"] == 10.0
