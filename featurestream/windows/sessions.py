"""Event-time sessions of one entity, with gap G.

A session is a maximal run of accepted events whose consecutive event times
are at most G apart. The state of one entity is a list of its sessions sorted
by start, any two separated by more than G, each one a list (so it stays small
encoded and cheap to update in place):

    [start_ms, last_ms, event_count, {aggregation_name: partial}]

with partials as in `featurestream.windows.aggregations`. Out-of-order events
extend a session at either end or fall inside it; an event within G of two
sessions merges them, exactly as sessionizing the sorted events would.

Events are applied by `featurestream_native.SessionFold` (`native/src/sessions.rs`),
written in Rust because it runs once per event; the merge of two sessions
(`absorb`), reads (`session_at`), pruning and the encoding are here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import orjson

from featurestream.windows.aggregations import finalize, merge

Session = list[Any]
SessionState = list[Session]
Aggregation = tuple[str, str, str]  # name, function, column
START, LAST, COUNT, AGGS = range(4)


def absorb(into: Session, later: Session, aggregations: Sequence[Aggregation]) -> None:
    """Merge the next session `later` into `into`: the rare path of the native fold (`SessionFold`), when an
    out-of-order event fills the gap between two sessions."""
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
    """MessagePack for one Redis hash field, as tiles are stored: what a min or max of a timestamp column
    holds comes back a datetime (JSON gave back a string, which no later event's datetime compares with)."""
    return msgspec.msgpack.encode(state)


def decode(data: bytes | str) -> SessionState:
    """The inverse of `encode`; a state written as JSON, before MessagePack, is read too."""
    if data[:1] in (b"[", "["):
        return orjson.loads(data)
    return msgspec.msgpack.decode(data)
