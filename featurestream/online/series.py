"""Tile series: the partials a windowed view keeps, shared between its aggregations.

Aggregations over the same column and slide share tiles (a 5 min and a 1 h
count with a 1 min slide read the same `n` partials), so a view stores one
series per (column, slide) holding the union of the components its functions need.
"""

from __future__ import annotations

from dataclasses import dataclass

from featurestream.definitions import StreamViewSpec
from featurestream.windows.aggregations import COMPONENTS, LAST_ORDER_KEY

# function -> the components of its partial, as featurestream.windows.aggregations defines them
FUNCTION_COMPONENTS: dict[str, tuple[str, ...]] = {
    function: tuple(component for component, _ in components) for function, components in COMPONENTS.items()
}
COMPONENT_ORDER = ("n", "s", "q", "lo", "hi", "lv")
LAST_KEY = LAST_ORDER_KEY  # the order key stored beside `lv`


@dataclass(frozen=True)
class Series:
    column: str
    slide_ms: int
    components: tuple[str, ...]


def view_series(view: StreamViewSpec) -> tuple[Series, ...]:
    """The series of a windowed view, in a stable order."""
    needed: dict[tuple[str, int], set[str]] = {}
    for agg in view.aggregations:
        if agg.slide_ms is None:
            continue
        needed.setdefault((agg.column, agg.slide_ms), set()).update(FUNCTION_COMPONENTS[agg.function])
    return tuple(
        Series(column, slide, tuple(c for c in COMPONENT_ORDER if c in comps))
        for (column, slide), comps in sorted(needed.items())
    )


def retention_ms(view: StreamViewSpec) -> int:
    """How far behind the newest event any tile of the view is still needed: longest window plus lateness."""
    longest = max((a.window_ms or 0 for a in view.aggregations), default=0)
    return longest + view.source.lateness_ms


def series_retention_ms(view: StreamViewSpec) -> dict[str, int]:
    """Per series (`column|slide`), how far behind the newest event its tiles are still needed.

    A 1 min tile that only 1 h windows read is dropped after an hour, not after the day a
    24 h window on another series needs: hashes stay small for serving and for pruning scans.
    """
    needed: dict[str, int] = {}
    for agg in view.aggregations:
        if agg.window_ms is not None and agg.slide_ms is not None:
            prefix = f"{agg.column}|{agg.slide_ms}"
            needed[prefix] = max(needed.get(prefix, 0), agg.window_ms + view.source.lateness_ms)
    return needed


def order_key(ts_ms: int, partition: int, offset: int) -> str:
    """Fixed width, so string order is (event time, partition, offset) order, in Lua as in Python."""
    return f"{ts_ms:015d}{partition:06d}{offset:019d}"
