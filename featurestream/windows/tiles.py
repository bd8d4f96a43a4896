"""Tile math in integer milliseconds.

A window of W ms sliding by S ms is stored as tiles of S ms: tile k holds
events with `k*S <= ts < (k+1)*S`. At time t the window covers the W/S newest
tiles, the newest one partial: `floor_S(t) - W + S <= ts <= t`.
"""

from __future__ import annotations


def tile_start(ts_ms: int, slide_ms: int) -> int:
    """Start of the tile holding `ts_ms` (a floor, so also right for times before 1970)."""
    return ts_ms - ts_ms % slide_ms


def window_bounds(t_ms: int, window_ms: int, slide_ms: int) -> tuple[int, int]:
    """Inclusive (lo, hi) event times the window covers at time t."""
    return t_ms - t_ms % slide_ms - window_ms + slide_ms, t_ms


def window_tiles(t_ms: int, window_ms: int, slide_ms: int) -> range:
    """Starts of the tiles the window covers at time t, oldest first."""
    newest = t_ms - t_ms % slide_ms
    return range(newest - window_ms + slide_ms, newest + slide_ms, slide_ms)


def validate_window(window_ms: int, slide_ms: int) -> None:
    """Reject windows tiles cannot represent exactly: both positive whole ms, the slide dividing the window."""
    for what, value in (("window", window_ms), ("slide", slide_ms)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{what} must be a whole number of milliseconds, got {value!r}")
        if value <= 0:
            raise ValueError(f"{what} must be positive, got {value} ms")
    if window_ms % slide_ms:
        raise ValueError(
            f"slide {_human(slide_ms)} does not divide window {_human(window_ms)}: a window is built from "
            f"whole slide-sized tiles, so pick a slide that divides it (for example 1m for a 1h window)"
        )


def _human(ms: int) -> str:
    """`90s (90000 ms)`: the unit people wrote, with the exact value."""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if ms % size == 0:
            return f"{ms // size}{unit} ({ms} ms)"
    return f"{ms} ms"
