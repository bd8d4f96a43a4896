"""Feature values from the streaming state in Redis, at a time t, with exactly the offline semantics."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from featurestream.definitions import StreamViewSpec
from featurestream.online.keys import parse_tile_field
from featurestream.online.series import LAST_KEY
from featurestream.windows import sessions
from featurestream.windows.aggregations import Partial, window_value
from featurestream.windows.tiles import window_tiles

Tiles = dict[tuple[str, int], dict[int, Partial]]  # (column, slide) -> tile start -> partial


def _decode_text(raw: bytes) -> str:
    return raw.decode()


# component -> how its Redis value becomes the partial's value
_CONVERT: dict[str, Callable[[bytes], Any]] = {
    "n": int, "s": float, "q": float, "lo": float, "hi": float, "lv": orjson.loads, LAST_KEY: _decode_text,
}
_FIELDS_CACHE_LIMIT = 100_000
_fields: dict[bytes, tuple[tuple[str, int], int, str] | None] = {}


def _tile_field(raw_name: bytes) -> tuple[tuple[str, int], int, str] | None:
    """((column, slide), start, component) of a field name, cached: every entity's hash repeats the same names."""
    try:
        return _fields[raw_name]
    except KeyError:
        if len(_fields) >= _FIELDS_CACHE_LIMIT:
            _fields.clear()
        tile = parse_tile_field(raw_name.decode())
        parsed = None if tile is None else ((tile[0], tile[1]), tile[2], tile[3])
        _fields[raw_name] = parsed
        return parsed


def parse_tiles(fields: Mapping[bytes, bytes]) -> Tiles:
    """The hash's tile fields as partials (`column|slide|start|component` -> value)."""
    return parse_tile_pairs(fields.items())


def parse_tile_pairs(pairs: Iterable[tuple[bytes, bytes]]) -> Tiles:
    """`parse_tiles` from (name, value) pairs, such as a raw HGETALL reply zipped up without building a dict."""
    tiles: Tiles = {}
    for raw_name, raw_value in pairs:
        tile = _tile_field(raw_name)
        if tile is None:
            continue
        series, start, component = tile
        partial = tiles.setdefault(series, {}).setdefault(start, {})
        convert = _CONVERT.get(component)
        if convert is not None:
            partial[component] = convert(raw_value)
    return tiles


def window_features(view: StreamViewSpec, fields: Mapping[bytes, bytes], t_ms: int) -> dict[str, Any]:
    """Every aggregation of a windowed view at time t (empty values where the entity has no state)."""
    return tile_features(view, parse_tiles(fields) if fields else {}, t_ms)


def tile_features(view: StreamViewSpec, tiles: Tiles, t_ms: int) -> dict[str, Any]:
    """`window_features` from already parsed tiles (the serving API also reads their age)."""
    out: dict[str, Any] = {}
    starts = {key: sorted(series) for key, series in tiles.items()}
    for agg in view.aggregations:
        assert agg.window_ms is not None and agg.slide_ms is not None
        key = (agg.column, agg.slide_ms)
        series = tiles.get(key)
        if not series:
            out[agg.name] = window_value(agg.function, ())
            continue
        # The tiles the entity has inside the window, oldest first: the merge order of a walk over every
        # covered start, without visiting the (many) empty ones.
        covered = window_tiles(t_ms, agg.window_ms, agg.slide_ms)
        ordered = starts[key]
        inside = ordered[bisect_left(ordered, covered.start):bisect_left(ordered, covered.stop)]
        out[agg.name] = window_value(agg.function, [series[start] for start in inside if start in covered])
    return out


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
