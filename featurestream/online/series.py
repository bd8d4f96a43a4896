"""Tile series: the partials a windowed view keeps, shared between its aggregations, and their encoding.

Aggregations over the same column and slide share tiles (a 5 min and a 1 h
count with a 1 min slide read the same `n` partials), so a view stores one
series per (column, slide, component) its functions need.

An entity's tiles are one field of its hash (`s`), MessagePack: a map from series
name to the series' live tiles, flat and oldest first: `[start, slot, ..., start,
...]`, a tile's slots being the component (`last`'s order key after its value),
and under `NEWEST` the newest event time applied, which tiles are kept relative
to (the stream materializer keeps, folds and encodes tiles in Rust, `native/src/tiles.rs`;
the reader decodes them here). One field, however many tiles a write touches, keeps a write's Redis cost per
key instead of per tile and component. A series per component means a function
added later over the same column and slide adds series and leaves the tiles of
the others as they were.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from msgspec import msgpack

from featurestream.definitions import StreamViewSpec
from featurestream.windows.aggregations import COMPONENTS, LAST_ORDER_KEY

# function -> the components of its partial, as featurestream.windows.aggregations defines them
FUNCTION_COMPONENTS: dict[str, tuple[str, ...]] = {
    function: tuple(component for component, _ in components) for function, components in COMPONENTS.items()
}
COMPONENT_ORDER = ("n", "s", "q", "lo", "hi", "lv")
LAST_KEY = LAST_ORDER_KEY  # the order key stored beside `lv`
# slot -> how two tiles' values of it merge: add, min, max, last (by the order key in the next slot), key
SLOT_KINDS: dict[str, str] = {
    **{component: kind for components in COMPONENTS.values() for component, kind in components}, LAST_KEY: "key",
}


@dataclass(frozen=True)
class Series:
    """One component of the partials over one (column, slide): one list of tiles in the state."""

    column: str
    slide_ms: int
    component: str
    name: str = field(init=False)  # the series' key in the encoded state
    slots: tuple[str, ...] = field(init=False)  # what a tile holds after its start
    kinds: tuple[str, ...] = field(init=False)  # how each slot merges (SLOT_KINDS)
    stride: int = field(init=False)  # a tile's length in the flat list: its start and its slots

    def __post_init__(self) -> None:
        slots = (self.component, LAST_KEY) if self.component == "lv" else (self.component,)
        object.__setattr__(self, "name", f"{self.column}|{self.slide_ms}|{self.component}")
        object.__setattr__(self, "slots", slots)
        object.__setattr__(self, "kinds", tuple(SLOT_KINDS[slot] for slot in slots))
        object.__setattr__(self, "stride", len(slots) + 1)


Tiles = dict[str, Any]  # series name -> [start, slots..., start, slots...], oldest first; NEWEST -> ms
NEWEST = "newest"  # no series name: those hold `|`


def decode_tiles(blob: bytes | None) -> Tiles:
    return msgpack.decode(blob) if blob else {}


def tile_at_or_before(tiles: list[Any], stride: int, start: int) -> int:
    """Where the last tile starting at or before `start` begins in a series' flat tiles (negative: none).

    Scans from the newest: writes and reads are mostly about the newest tiles.
    """
    at = len(tiles) - stride
    while at >= 0 and tiles[at] > start:
        at -= stride
    return at


def view_series(view: StreamViewSpec) -> tuple[Series, ...]:
    """The series of a windowed view, in a stable order."""
    needed: dict[tuple[str, int], set[str]] = {}
    for agg in view.aggregations:
        if agg.slide_ms is None:
            continue
        needed.setdefault((agg.column, agg.slide_ms), set()).update(FUNCTION_COMPONENTS[agg.function])
    return tuple(
        Series(column, slide, component)
        for (column, slide), components in sorted(needed.items())
        for component in COMPONENT_ORDER if component in components
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
