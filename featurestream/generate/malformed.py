"""Broken records of every kind a stream materializer must dead-letter without stopping."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

MALFORMED_KINDS = (
    "not_json",                 # a truncated object
    "not_utf8",                 # what a Latin-1 or UTF-16 producer sends
    "missing_user_id",
    "missing_event_timestamp",
    "wrong_type_user_id",       # "abc"
    "wrong_type_price",         # "cheap"
    "bad_timestamp",            # not a time at all
    "future_timestamp",         # years after the data ends
)
_UNPARSABLE_TIMES = ("yesterday", "2026-13-45T25:61:00Z", "soon")
_YEAR_MS = 365 * 86_400_000


def malformed_count(good_events: int, fraction: float) -> int:
    """How many malformed lines make `fraction` of all lines."""
    return round(good_events * fraction / (1 - fraction))


def malformed_records(rng: np.random.Generator, count: int, like: list[dict[str, Any]],
                      iso_ms: Callable[[np.ndarray], list[str]], end_ms: int) -> list[bytes]:
    """`count` records in shuffled kinds (every kind once count allows), each a damaged copy of an event in `like`.

    `iso_ms` formats epoch ms the way good events carry their timestamps.
    """
    kinds = rng.permutation(np.arange(count) % len(MALFORMED_KINDS))
    future = iso_ms(end_ms + rng.integers(3, 30, count) * _YEAR_MS)
    unparsable = rng.integers(0, len(_UNPARSABLE_TIMES), count)
    cut = rng.random(count)
    latin1 = rng.random(count) < 0.5
    records = []
    for k, (kind, base) in enumerate(zip(kinds, like, strict=True)):
        record = {**base, "event_id": f"bad-{k:06d}"}
        match MALFORMED_KINDS[kind]:
            case "not_json":
                raw = orjson.dumps(record)
                records.append(raw[:len(raw) // 3 + int(cut[k] * (len(raw) * 2 // 3 - 1))])
                continue
            case "not_utf8":   # from a Latin-1 producer (inside a field every decoder reads) or a UTF-16 one
                raw = orjson.dumps(record)
                records.append(raw.replace(b'"bad-', b'"caf\xe9-bad-', 1) if latin1[k]
                               else b"\xff\xfe" + raw.decode().encode("utf-16-le"))
                continue
            case "missing_user_id":
                del record["user_id"]
            case "missing_event_timestamp":
                del record["event_timestamp"]
            case "wrong_type_user_id":
                record["user_id"] = "abc"
            case "wrong_type_price":
                record["price"] = "cheap"
            case "bad_timestamp":
                record["event_timestamp"] = _UNPARSABLE_TIMES[unparsable[k]]
            case "future_timestamp":
                record["event_timestamp"] = future[k]
        records.append(orjson.dumps(record))
    return records
