"""Event-time sessions of one entity, with gap G.

A session is a maximal run of accepted events whose consecutive event times
are at most G apart. The state of one entity is a list of its sessions sorted
by start, any two separated by more than G, each one a list (so it stays small
in JSON and cheap to update in place):

    [start_ms, last_ms, event_count, {aggregation_name: partial}]

with partials as in `featurestream.windows.aggregations`. Out-of-order events
extend a session at either end or fall inside it; an event within G of two
sessions merges them, exactly as sessionizing the sorted events would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from featurestream.windows.aggregations import LAST_ORDER_KEY, accumulate, finalize, merge

Session = list[Any]
SessionState = list[Session]
Aggregation = tuple[str, str, str]  # name, function, column
START, LAST, COUNT, AGGS = range(4)


def add_event(state: SessionState, ts_ms: int, row: Mapping[str, Any], aggregations: Sequence[Aggregation],
              order_key: Any, gap_ms: int) -> SessionState:
    """Apply one accepted event; updates `state` in place and returns it.

    `aggregations` are the view's (name, function, column), every one: merging two
    sessions needs each aggregation's function. The event's values are read from `row`.
    """
    # Sessions [0, hi) start no later than ts + G; of those, [lo, hi) also end no earlier than ts - G.
    # Both bounds are monotone in the list, so [lo, hi) is exactly the sessions the event touches.
    hi = len(state)
    while hi and state[hi - 1][START] - gap_ms > ts_ms:
        hi -= 1
    lo = hi
    while lo and state[lo - 1][LAST] + gap_ms >= ts_ms:
        lo -= 1
    if lo == hi:
        session: Session = [ts_ms, ts_ms, 0, {}]
        state.insert(hi, session)
    else:
        session = state[lo]
        for other in state[lo + 1:hi]:
            _absorb(session, other, aggregations)
        del state[lo + 1:hi]
        if ts_ms < session[START]:
            session[START] = ts_ms
        elif ts_ms > session[LAST]:
            session[LAST] = ts_ms
    session[COUNT] += 1
    aggs = session[AGGS]
    for name, function, column in aggregations:
        value = row[column]
        if value is not None:
            aggs[name] = accumulate(function, aggs.get(name), value, order_key)
    return state


def _absorb(into: Session, later: Session, aggregations: Sequence[Aggregation]) -> None:
    """Merge the next session `later` into `into`."""
    into[LAST] = later[LAST]
    into[COUNT] += later[COUNT]
    aggs = into[AGGS]
    functions = {name: function for name, function, _ in aggregations}
    for name, partial in later[AGGS].items():
        mine = aggs.get(name)
        aggs[name] = partial if mine is None else merge(functions[name], mine, partial)


def session_at(state: SessionState, t_ms: int, gap_ms: int,
               functions: Mapping[str, str]) -> tuple[dict[str, Any], bool]:
    """The session features at time t, and whether they are exact.

    They are those of the session holding the latest event with ts <= t, if
    that event is at most G before t. The state keeps whole sessions, not
    their events, so it answers exactly for t at or after the last event of
    that session, or when no session is active at t. For t strictly inside a
    session's span a session is certainly active (its events are < G apart),
    but the values returned cover the whole session, events after t included,
    and the flag is False: serving at "now" never meets this; point-in-time
    training must compute from the event log instead.

    `functions` maps each aggregation name to its function. With no active
    session every feature is None except `session_event_count`, which is 0.
    """
    i = len(state)
    while i and state[i - 1][START] > t_ms:
        i -= 1
    if i:
        start, last, count, aggs = state[i - 1]
        if last > t_ms or t_ms - last <= gap_ms:
            features: dict[str, Any] = {
                "session_start": start,
                "session_event_count": count,
                "session_duration_s": (last - start) / 1000,
            }
            for name, function in functions.items():
                features[name] = finalize(function, aggs.get(name, {}))
            return features, last <= t_ms
    return no_session(functions), True


def no_session(functions: Mapping[str, str]) -> dict[str, Any]:
    """The features when no session is active (or the entity has no state at all)."""
    features: dict[str, Any] = {"session_start": None, "session_event_count": 0, "session_duration_s": None}
    for name in functions:
        features[name] = None
    return features


def prune(state: SessionState, watermark_ms: int, gap_ms: int) -> SessionState:
    """Drop sessions that can neither change nor be current again; updates in place and returns `state`.

    An accepted event has ts >= watermark, so a session whose last event is
    before watermark - G can never grow or merge. The newest session is kept
    whatever its age: it is the one a request at "now" reads. With events from
    several partitions, pass the lowest of their watermarks. Afterwards the
    state still answers `session_at` for any t >= watermark.
    """
    cutoff = watermark_ms - gap_ms
    keep_from = 0
    newest = len(state) - 1
    while keep_from < newest and state[keep_from][LAST] < cutoff:
        keep_from += 1
    if keep_from:
        del state[:keep_from]
    return state


def encode(state: SessionState) -> bytes:
    """Compact JSON for one Redis hash field."""
    return orjson.dumps(state)


def decode(data: bytes | str) -> SessionState:
    """The inverse of `encode`; order keys that JSON turned into lists become tuples again."""
    state = orjson.loads(data)
    for session in state:
        for partial in session[AGGS].values():
            key = partial.get(LAST_ORDER_KEY)
            if type(key) is list:
                partial[LAST_ORDER_KEY] = tuple(key)
    return state
