"""Feature values from the streaming state in Redis, at a time t, with exactly the offline semantics."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from featurestream.definitions import StreamViewSpec
from featurestream.online.keys import parse_tile_field
from featurestream.online.series import LAST_KEY
from featurestream.windows import sessions
from featurestream.windows.aggregations import Partial, window_value
from featurestream.windows.tiles import window_tiles

_FIELDS_CACHE_LIMIT = 100_000
_SKIP = (-1, 0, "", None)  # a field that is no tile of the reader's series (offsets, `_p`, retired series)


def _decode_text(raw: bytes) -> str:
    return raw.decode()


# component -> how its Redis value becomes the partial's value
_CONVERT: dict[str, Callable[[bytes], Any]] = {
    "n": int, "s": float, "q": float, "lo": float, "hi": float, "lv": orjson.loads, LAST_KEY: _decode_text,
}


class WindowReader:
    """Some aggregations of one windowed view, evaluated at t from the view's hash.

    Compiled once per (view, features) because serving evaluates it for every entity of
    a request: field names are parsed once (cached), each window's tile range is computed
    once per request (`windows`), and only the tiles inside a window are merged.
    """

    def __init__(self, view: StreamViewSpec, features: Sequence[str] | None = None) -> None:
        by_name = {a.name: a for a in view.aggregations}
        ordered = [by_name[f] for f in features] if features is not None else list(view.aggregations)
        self.series = sorted({(a.column, a.slide_ms or 0) for a in view.aggregations})
        index = {series: i for i, series in enumerate(self.series)}
        self._aggs = [(a.function, index[(a.column, a.slide_ms or 0)], a.window_ms or 0, a.slide_ms or 0)
                      for a in ordered]
        self._empty = [window_value(a.function, ()) for a in ordered]
        self._index = index
        self._fields: dict[bytes, tuple[int, int, str, Callable[[bytes], Any] | None]] = {}

    def _field(self, name: bytes) -> tuple[int, int, str, Callable[[bytes], Any] | None]:
        if len(self._fields) >= _FIELDS_CACHE_LIMIT:
            self._fields.clear()
        tile = parse_tile_field(name.decode())
        series = None if tile is None else self._index.get((tile[0], tile[1]))
        parsed = _SKIP if tile is None or series is None else (series, tile[2], tile[3], _CONVERT.get(tile[3]))
        self._fields[name] = parsed
        return parsed

    def tiles(self, flat: Sequence[bytes]) -> list[dict[int, Partial]]:
        """Per series, tile start -> partial, from a raw HGETALL reply (name, value, name, value, ...)."""
        out: list[dict[int, Partial]] = [{} for _ in self.series]
        fields = self._fields
        pairs = iter(flat)
        for name, raw in zip(pairs, pairs):
            index, start, component, convert = fields.get(name) or self._field(name)
            if convert is None:
                continue
            series = out[index]
            partial = series.get(start)
            if partial is None:
                partial = series[start] = {}
            partial[component] = convert(raw)
        return out

    def windows(self, t_ms: int) -> list[range]:
        """The tile starts each aggregation's window covers at t, oldest first."""
        return [window_tiles(t_ms, window, slide) for _, _, window, slide in self._aggs]

    def evaluate(self, flat: Sequence[bytes], windows: list[range], t_ms: int) -> tuple[list[Any], int | None]:
        """The aggregations' values at t (empty values without tiles), in the reader's feature order,
        and the end of the newest tile starting at or before t (None without one): the view's age."""
        tiles = self.tiles(flat)
        starts = [sorted(series) for series in tiles]
        newest = None
        for (_, slide), ordered in zip(self.series, starts):
            before = bisect_right(ordered, t_ms)
            if before and (newest is None or ordered[before - 1] + slide > newest):
                newest = ordered[before - 1] + slide
        values = []
        for (function, index, _, _), covered, empty in zip(self._aggs, windows, self._empty):
            ordered = starts[index]
            if not ordered:
                values.append(empty)
                continue
            # Oldest first, the merge order of a walk over every covered start, without visiting the empty ones.
            series = tiles[index]
            inside = ordered[bisect_left(ordered, covered.start):bisect_left(ordered, covered.stop)]
            values.append(window_value(function, [series[s] for s in inside if s in covered]))
        return values, newest


def window_features(view: StreamViewSpec, fields: Mapping[bytes, bytes], t_ms: int) -> dict[str, Any]:
    """Every aggregation of a windowed view at time t (empty values where the entity has no state)."""
    reader = WindowReader(view)
    values, _ = reader.evaluate([part for pair in fields.items() for part in pair], reader.windows(t_ms), t_ms)
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
