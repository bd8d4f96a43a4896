"""Feature values from the streaming state in Redis, at a time t, with exactly the offline semantics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from featurestream.definitions import StreamViewSpec
from featurestream.online.series import decode_tiles, tile_at_or_before, view_series
from featurestream.windows import sessions
from featurestream.windows.aggregations import COMPONENTS, finalize, merge_slots
from featurestream.windows.tiles import window_tiles


class Frame:
    """What a reader needs at one time t, the same object between tile boundaries."""

    __slots__ = ("key", "windows")

    def __init__(self, key: tuple[int, ...], windows: list[range]) -> None:
        self.key = key                  # the newest tile start at t of each series
        self.windows = windows          # the tile starts each aggregation covers, oldest first


class WindowReader:
    """Some aggregations of one windowed view, evaluated at t from an entity's encoded tiles.

    Compiled once per (view, features), and its frame once per tile boundary, because serving
    evaluates it for every entity of a request.
    """

    def __init__(self, view: StreamViewSpec, features: Sequence[str] | None = None) -> None:
        by_name = {a.name: a for a in view.aggregations}
        ordered = [by_name[f] for f in features] if features is not None else list(view.aggregations)
        self.series = view_series(view)
        index = {(s.column, s.slide_ms, s.component): i for i, s in enumerate(self.series)}
        # Per aggregation: function, the series of its components, window, slide.
        self._aggs = [(a.function, [index[(a.column, a.slide_ms or 0, c)] for c, _ in COMPONENTS[a.function]],
                       a.window_ms or 0, a.slide_ms or 0) for a in ordered]
        self._frame: Frame | None = None

    def frame(self, t_ms: int) -> Frame:
        """The windows at t; the same object for every t between two tile boundaries."""
        key = tuple(t_ms - t_ms % s.slide_ms for s in self.series)
        if self._frame is None or self._frame.key != key:
            self._frame = Frame(key, [window_tiles(t_ms, window, slide) for _, _, window, slide in self._aggs])
        return self._frame

    def evaluate(self, blob: bytes | None, frame: Frame) -> tuple[list[Any], int | None]:
        """The aggregations' values at the frame's t (empty values without tiles), in the reader's feature
        order, and the end of the newest tile starting at or before t (None without one): the view's age."""
        state = decode_tiles(blob)
        values = []
        for (function, indexes, _, _), covered in zip(self._aggs, frame.windows, strict=True):
            partial: dict[str, Any] = {}
            for index in indexes:
                series = self.series[index]
                tiles = state.get(series.name) or ()
                kinds, stride = series.kinds, series.stride
                merged: list[Any] | None = None
                for at in range(0, len(tiles), stride):
                    if tiles[at] in covered:
                        if merged is None:
                            merged = tiles[at + 1:at + stride]
                        else:
                            merge_slots(merged, 0, kinds, tiles, at + 1)
                if merged:
                    partial.update(zip(series.slots, merged))
            values.append(finalize(function, partial))
        newest = None
        for series, last_start in zip(self.series, frame.key, strict=True):
            tiles = state.get(series.name)
            at = tile_at_or_before(tiles, series.stride, last_start) if tiles else -1
            if at >= 0 and (newest is None or tiles[at] + series.slide_ms > newest):
                newest = tiles[at] + series.slide_ms
        return values, newest


def window_features(view: StreamViewSpec, blob: bytes | None, t_ms: int) -> dict[str, Any]:
    """Every aggregation of a windowed view at time t, from its encoded tiles (None: the entity has none)."""
    reader = WindowReader(view)
    values, _ = reader.evaluate(blob, reader.frame(t_ms))
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
