"""How one event enters a partial of `featurestream.windows.aggregations`, and the order key of `last`, in
Python: the tests build partials with them, and they state what the native folds (`native/src/`) do per event."""

from __future__ import annotations

from typing import Any

from featurestream.windows.aggregations import COMPONENTS, LAST_ORDER_KEY, Partial


def accumulate(function: str, partial: Partial | None, value: Any, order_key: Any) -> Partial:
    """Add one event's value; updates `partial` in place and returns it.

    `order_key` matters only for `last`. A None value leaves the partial as it was.
    """
    if partial is None:
        partial = {}
    if value is None:
        return partial
    if function == "count":
        partial["n"] = partial.get("n", 0) + 1
    elif function == "sum":
        partial["s"] = partial.get("s", 0) + value
    elif function == "mean":
        partial["n"] = partial.get("n", 0) + 1
        partial["s"] = partial.get("s", 0) + value
    elif function == "var" or function == "stddev":
        partial["n"] = partial.get("n", 0) + 1
        partial["s"] = partial.get("s", 0) + value
        # Always a float: squares of big ints would overflow JSON (session state) and MessagePack (tiles).
        partial["q"] = partial.get("q", 0.0) + float(value) * value
    elif function == "min":
        lo = partial.get("lo")
        if lo is None or value < lo:
            partial["lo"] = value
    elif function == "max":
        hi = partial.get("hi")
        if hi is None or value > hi:
            partial["hi"] = value
    elif function == "last":
        key = partial.get(LAST_ORDER_KEY)
        if key is None or order_key > key:
            partial["lv"] = value
            partial[LAST_ORDER_KEY] = order_key
    else:
        raise ValueError(f"unknown aggregation function {function!r}; expected one of {', '.join(COMPONENTS)}")
    return partial


def order_key(ts_ms: int, partition: int, offset: int) -> str:
    """Fixed width, so string order is (event time, partition, offset) order."""
    return f"{ts_ms:015d}{partition:06d}{offset:019d}"
