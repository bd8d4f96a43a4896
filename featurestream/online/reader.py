"""Feature values from the streaming state in Redis, at a time t, with exactly the offline semantics."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from featurestream.definitions import StreamViewSpec
from featurestream.online.keys import parse_tile_field
from featurestream.online.series import LAST_KEY
from featurestream.windows import sessions
from featurestream.windows.aggregations import COMPONENTS, Partial, finalize
from featurestream.windows.tiles import window_tiles

_PLANS_LIMIT = 100_000  # field plans kept per frame: bounded, whatever the hashes hold

_ADD, _MIN, _MAX, _LAST_VALUE, _LAST_KEY = range(5)
_KINDS = {"add": _ADD, "min": _MIN, "max": _MAX}


def _decode_text(raw: bytes) -> str:
    return raw.decode()


# component -> how its Redis value becomes the partial's value
_CONVERT: dict[str, Callable[[bytes], Any]] = {
    "n": int, "s": float, "q": float, "lo": float, "hi": float, "lv": orjson.loads, LAST_KEY: _decode_text,
}

# A field's plan: how its value converts, the accumulators it goes into as (slot, kind, tile start), and the
# end of its tile (None for a field that is no tile of the reader's series at or before t: offsets, `_p`,
# retired series, tiles after t).
Plan = tuple[Callable[[bytes], Any] | None, tuple[tuple[int, int, int], ...], int | None]
_NOTHING: Plan = (None, (), None)
_MISSING = object()  # a `last` tile's value or order key not seen (yet)


class Frame:
    """What a reader needs at one time t: each window's tiles, and each field's plan, built once and reused."""

    __slots__ = ("key", "windows", "plans")

    def __init__(self, key: tuple[int, ...], windows: list[range]) -> None:
        self.key = key                  # the newest tile start at t of each series
        self.windows = windows          # the tile starts each aggregation covers, oldest first
        self.plans: dict[bytes, Plan] = {}


class WindowReader:
    """Some aggregations of one windowed view, evaluated at t from the view's hash.

    Compiled once per (view, features) because serving evaluates it for every entity of a request. Each
    tile field of a hash is looked up in a plan made once per set of tile boundaries (`frame`), which says
    which accumulators of which aggregations its value goes into, so evaluating an entity is one pass over
    its fields with no per-tile partials; the accumulators are then finalized as partials of the window.
    """

    def __init__(self, view: StreamViewSpec, features: Sequence[str] | None = None) -> None:
        by_name = {a.name: a for a in view.aggregations}
        ordered = [by_name[f] for f in features] if features is not None else list(view.aggregations)
        self.series = sorted({(a.column, a.slide_ms or 0) for a in view.aggregations})
        self._index = {series: i for i, series in enumerate(self.series)}
        self._aggs = [(a.function, self._index[(a.column, a.slide_ms or 0)], a.window_ms or 0, a.slide_ms or 0)
                      for a in ordered]
        # Per aggregation, its components and their accumulator slots.
        self._slots: list[list[tuple[str, int, int]]] = []
        count = 0
        for function, _, _, _ in self._aggs:
            mine = []
            for component, kind in COMPONENTS[function]:
                mine.append((component, count, _KINDS.get(kind, _LAST_VALUE)))
                count += 1
            self._slots.append(mine)
        self._slot_count = count
        self._frame: Frame | None = None

    def frame(self, t_ms: int) -> Frame:
        """The windows and field plans at t; the same object for every t between two tile boundaries."""
        key = tuple(t_ms - t_ms % slide if slide else t_ms for _, slide in self.series)
        if self._frame is None or self._frame.key != key:
            self._frame = Frame(key, [window_tiles(t_ms, window, slide) for _, _, window, slide in self._aggs])
        return self._frame

    def _plan(self, name: bytes, frame: Frame) -> Plan:
        if len(frame.plans) >= _PLANS_LIMIT:
            frame.plans.clear()
        tile = parse_tile_field(name.decode())
        series = None if tile is None else self._index.get((tile[0], tile[1]))
        if tile is None or series is None or tile[2] > frame.key[series] or tile[3] not in _CONVERT:
            plan = _NOTHING
        else:
            _, slide, start, component = tile
            ops = []
            for (_, index, _, _), covered, mine in zip(self._aggs, frame.windows, self._slots):
                if index != series or start not in covered:
                    continue
                for name_of, slot, kind in mine:
                    if name_of == component:
                        ops.append((slot, kind, start))
                    elif component == LAST_KEY and kind == _LAST_VALUE:
                        ops.append((slot, _LAST_KEY, start))
            plan = (_CONVERT[component], tuple(ops), start + slide)
        frame.plans[name] = plan
        return plan

    def evaluate(self, flat: Sequence[bytes], frame: Frame) -> tuple[list[Any], int | None]:
        """The aggregations' values at the frame's t (empty values without tiles), in the reader's feature
        order, and the end of the newest tile starting at or before t (None without one): the view's age."""
        plans = frame.plans
        acc: list[Any] = [None] * self._slot_count
        lasts: dict[tuple[int, int], list[Any]] = {}  # (slot, tile start) -> a `last` tile's [value, order key]
        newest = None
        pairs = iter(flat)
        for name, raw in zip(pairs, pairs):
            convert, ops, end = plans.get(name) or self._plan(name, frame)
            if end is None:
                continue
            if newest is None or end > newest:
                newest = end
            if not ops:
                continue
            value = convert(raw)  # type: ignore[misc]
            for slot, kind, start in ops:
                held = acc[slot]
                if kind == _ADD:
                    acc[slot] = value if held is None else held + value
                elif kind == _MIN:
                    if held is None or value < held:
                        acc[slot] = value
                elif kind == _MAX:
                    if held is None or value > held:
                        acc[slot] = value
                else:  # a `last` tile's value or order key, paired by tile start
                    lasts.setdefault((slot, start), [_MISSING, _MISSING])[kind == _LAST_KEY] = value
        for (slot, _), (value, order) in lasts.items():
            held = acc[slot]
            if value is not _MISSING and order is not _MISSING and (held is None or order > held[1]):
                acc[slot] = (value, order)
        values = []
        for (function, _, _, _), mine in zip(self._aggs, self._slots):
            partial: Partial = {}
            for component, slot, kind in mine:
                held = acc[slot]
                if held is None:
                    continue
                if kind == _LAST_VALUE:
                    partial[component], partial[LAST_KEY] = held
                else:
                    partial[component] = held
            values.append(finalize(function, partial))
        return values, newest


def window_features(view: StreamViewSpec, fields: Mapping[bytes, bytes], t_ms: int) -> dict[str, Any]:
    """Every aggregation of a windowed view at time t (empty values where the entity has no state)."""
    reader = WindowReader(view)
    values, _ = reader.evaluate([part for pair in fields.items() for part in pair], reader.frame(t_ms))
    return dict(zip((a.name for a in view.aggregations), values))


def session_features(view: StreamViewSpec, blob: bytes | None, t_ms: int) -> dict[str, Any]:
    """The session features of a session view at time t (exact for t at or after the session's last event)."""
    return session_features_at(view, blob, t_ms)[0]


def session_features_at(view: StreamViewSpec, blob: bytes | None, t_ms: int) -> tuple[dict[str, Any], int | None]:
    """`session_features`, plus the time of the entity's latest event at or before t (None without one)."""
    functions = {a.name: a.function for a in view.aggregations}
    if not blob:
        return sessions.no_session(functions), None
    state = sessions.decode(blob)
    features, _exact = sessions.session_at(state, t_ms, view.session_gap_ms or 0, functions)
    started = [s for s in state if s[sessions.START] <= t_ms]
    return features, min(started[-1][sessions.LAST], t_ms) if started else None
