"""Feature values from the streaming state in Redis, at a time t, with exactly the offline semantics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from featurestream.definitions import StreamViewSpec
from featurestream.online.keys import parse_tile_field
from featurestream.online.series import LAST_KEY
from featurestream.windows import sessions
from featurestream.windows.aggregations import Partial, window_value
from featurestream.windows.tiles import window_tiles

_FLOATS = frozenset(("s", "q", "lo", "hi"))
Tiles = dict[tuple[str, int], dict[int, Partial]]  # (column, slide) -> tile start -> partial


def parse_tiles(fields: Mapping[bytes, bytes]) -> Tiles:
    """The hash's tile fields as partials (`column|slide|start|component` -> value)."""
    tiles: Tiles = {}
    for raw_name, raw_value in fields.items():
        tile = parse_tile_field(raw_name.decode())
        if tile is None:
            continue
        column, slide, start, component = tile
        partial = tiles.setdefault((column, slide), {}).setdefault(start, {})
        if component == "n":
            partial["n"] = int(raw_value)
        elif component in _FLOATS:
            partial[component] = float(raw_value)
        elif component == "lv":
            partial["lv"] = orjson.loads(raw_value)
        elif component == LAST_KEY:
            partial[LAST_KEY] = raw_value.decode()
    return tiles


def window_features(view: StreamViewSpec, fields: Mapping[bytes, bytes], t_ms: int) -> dict[str, Any]:
    """Every aggregation of a windowed view at time t (empty values where the entity has no state)."""
    return tile_features(view, parse_tiles(fields) if fields else {}, t_ms)


def tile_features(view: StreamViewSpec, tiles: Tiles, t_ms: int) -> dict[str, Any]:
    """`window_features` from already parsed tiles (the serving API also reads their age)."""
    out: dict[str, Any] = {}
    for agg in view.aggregations:
        assert agg.window_ms is not None and agg.slide_ms is not None
        series = tiles.get((agg.column, agg.slide_ms), {})
        covered = window_tiles(t_ms, agg.window_ms, agg.slide_ms)
        out[agg.name] = window_value(agg.function, (series.get(start) for start in covered) if series else ())
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
