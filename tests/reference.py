"""Brute-force reference of DESIGN.md "Semantics", for unit and integration tests.

Deliberately naive and independent of `featurestream.windows`: it keeps every
event and recomputes from scratch, so it can judge the tiles, partials and
session states the real code keeps.

An event is a dict with `ts` (event time, integer ms), `partition`, `offset`
(its arrival order, which breaks ties in event time) and its columns; a
missing column counts as null.

    ref_accepted(events, lateness_ms)                        -> the events that are not late
    ref_window(events, function, window_ms, slide_ms, t_ms,
               column="value")                               -> the window aggregation at t
    ref_session(events, gap_ms, {name: (column, function)}, t_ms)
                                                             -> the session features at t
    agrees(function, actual, expected, magnitude)            -> equal, floats up to rounding
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

Event = Mapping[str, Any]


def ref_accepted(events: Iterable[Event], lateness_ms: int) -> list[Event]:
    """The events, in the given order, that are not late.

    Per partition, in offset order, an event is late when its time is below
    the highest event time accepted so far in that partition minus the lateness.
    """
    late: set[tuple[int, int]] = set()
    newest: dict[int, int] = {}
    events = list(events)
    for event in sorted(events, key=lambda e: (e["partition"], e["offset"])):
        seen = newest.get(event["partition"])
        if seen is not None and event["ts"] < seen - lateness_ms:
            late.add((event["partition"], event["offset"]))
        elif seen is None or event["ts"] > seen:
            newest[event["partition"]] = event["ts"]
    return [e for e in events if (e["partition"], e["offset"]) not in late]


def ref_window(events: Iterable[Event], function: str, window_ms: int, slide_ms: int, t_ms: int,
               column: str = "value") -> Any:
    """`function` of `column` over the events with floor_S(t) - W + S <= ts <= t."""
    lo = (t_ms // slide_ms) * slide_ms - window_ms + slide_ms
    return _aggregate(function, [e for e in events if lo <= e["ts"] <= t_ms], column)


def ref_session(events: Iterable[Event], gap_ms: int, aggs: Mapping[str, tuple[str, str]],
                t_ms: int) -> dict[str, Any]:
    """Session features at t; `aggs` maps each feature name to (column, function).

    Sessionizes the events with ts <= t (sorted, split where consecutive times
    are more than G apart) and reads the last session if its last event is at
    most G before t. Returns session_start (ms), session_event_count,
    session_duration_s and each aggregation; with no active session, count 0
    and everything else None.
    """
    past = sorted((e for e in events if e["ts"] <= t_ms), key=lambda e: (e["ts"], e["partition"], e["offset"]))
    if not past or t_ms - past[-1]["ts"] > gap_ms:
        features: dict[str, Any] = {"session_start": None, "session_event_count": 0, "session_duration_s": None}
        features.update({name: None for name in aggs})
        return features
    first = len(past) - 1
    while first and past[first]["ts"] - past[first - 1]["ts"] <= gap_ms:
        first -= 1
    session = past[first:]
    features = {
        "session_start": session[0]["ts"],
        "session_event_count": len(session),
        "session_duration_s": (session[-1]["ts"] - session[0]["ts"]) / 1000,
    }
    for name, (column, function) in aggs.items():
        features[name] = _aggregate(function, session, column)
    return features


def agrees(function: str, actual: Any, expected: Any, magnitude: float = 1.0) -> bool:
    """Whether a computed value equals the reference's; sums, means and spreads up to float rounding.

    `magnitude` is the largest absolute value aggregated (an upper bound will
    do): partials hold a sum and a sum of squares, so their rounding error
    scales with it, not with the result.
    """
    if function in ("count", "min", "max", "last") or actual is None or expected is None:
        return actual == expected
    if function == "var":
        slack = 1e-9 * magnitude * magnitude
    elif function == "stddev":
        slack = 4e-5 * magnitude
    else:
        slack = 1e-9 * magnitude
    return math.isclose(actual, expected, rel_tol=1e-9, abs_tol=slack)


def _aggregate(function: str, events: list[Event], column: str) -> Any:
    """`function` over the non-null values of `column`, from scratch."""
    rows = [e for e in events if e.get(column) is not None]
    values = [e[column] for e in rows]
    n = len(values)
    if function == "count":
        return n
    if function == "sum":
        return sum(values) if all(isinstance(v, int) for v in values) else math.fsum(values)
    if function == "last":
        if not rows:
            return None
        return max(rows, key=lambda e: (e["ts"], e["partition"], e["offset"]))[column]
    if n == 0:
        if function in ("mean", "min", "max", "var", "stddev"):
            return None
        raise ValueError(f"unknown aggregation function {function!r}")
    if function == "mean":
        return math.fsum(values) / n
    if function == "min":
        return min(values)
    if function == "max":
        return max(values)
    if function in ("var", "stddev"):
        if n < 2:
            return None
        mean = math.fsum(values) / n
        var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
        return var if function == "var" else math.sqrt(var)
    raise ValueError(f"unknown aggregation function {function!r}")
