"""Mergeable partials of the aggregation functions.

A partial is a plain dict of components, for example `{"n": 3, "s": 7.5}` for
a mean. Every component merges on its own by one of four kinds, so a tile can
keep its partials as a flat run of slots (`merge_slots`):

| kind | merge |
|---|---|
| `add` | a + b (integer or float) |
| `min` / `max` | the smaller / larger |
| `last` | the value whose order key is greatest; the key lives beside it in `lk` |

The order key of `last` is a totally ordered value consistent with (ts_ms,
partition, offset): the stream materializer stores a fixed-width string of the three
(`native/src/events.rs`, `Event::order_key`); the tests also use the tuple. One partial must not mix the two.

The empty partial `{}` is the identity of `merge`. Nulls are ignored as in SQL.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

Partial = dict[str, Any]

LAST_ORDER_KEY = "lk"
_NSQ = (("n", "add"), ("s", "add"), ("q", "add"))
COMPONENTS: dict[str, tuple[tuple[str, str], ...]] = {
    "count": (("n", "add"),),
    "sum": (("s", "add"),),
    "mean": (("n", "add"), ("s", "add")),
    "var": _NSQ,
    "stddev": _NSQ,
    "min": (("lo", "min"),),
    "max": (("hi", "max"),),
    "last": (("lv", "last"),),
}


def merge(function: str, a: Partial, b: Partial) -> Partial:
    """The partial of the union of two event sets; a new dict holding only `function`'s components."""
    out: Partial = {}
    for component, kind in COMPONENTS[function]:
        if component in a:
            out[component] = a[component]
            if kind == "last":
                out[LAST_ORDER_KEY] = a[LAST_ORDER_KEY]
    return _merge_into(function, out, b)


def _merge_into(function: str, into: Partial, b: Partial) -> Partial:
    """Merge `b` into `into` in place."""
    for component, kind in COMPONENTS[function]:
        if component not in b:
            continue
        if component not in into:
            into[component] = b[component]
            if kind == "last":
                into[LAST_ORDER_KEY] = b[LAST_ORDER_KEY]
            continue
        names, kinds = ((component, LAST_ORDER_KEY), (kind, "key")) if kind == "last" else ((component,), (kind,))
        held = [into[name] for name in names]
        merge_slots(held, 0, kinds, [b[name] for name in names], 0)
        into.update(zip(names, held))
    return into


def merge_slots(into: list[Any], at: int, kinds: Sequence[str], source: Sequence[Any], start: int) -> None:
    """Merge partial components laid out as slots, `source[start:]` into `into[at:]`, a kind per slot
    (`last`'s order key in the slot after its value, of kind `key`): stored tiles are such slots."""
    for offset, kind in enumerate(kinds):
        value, here = source[start + offset], at + offset
        if kind == "add":
            into[here] += value
        elif kind == "min":
            if value < into[here]:
                into[here] = value
        elif kind == "max":
            if value > into[here]:
                into[here] = value
        elif kind == "last" and source[start + offset + 1] > into[here + 1]:
            into[here] = value
            into[here + 1] = source[start + offset + 1]


def finalize(function: str, partial: Partial) -> Any:
    """The feature value of a partial; the function's empty value for `{}`."""
    if function == "count":
        return partial.get("n", 0)
    if function == "sum":
        return partial.get("s", 0)
    if function == "mean":
        n = partial.get("n", 0)
        return partial["s"] / n if n else None
    if function == "min":
        return partial.get("lo")
    if function == "max":
        return partial.get("hi")
    if function == "last":
        return partial.get("lv")
    if function == "var":
        return _sample_variance(partial)
    if function == "stddev":
        var = _sample_variance(partial)
        return None if var is None else math.sqrt(var)
    raise ValueError(f"unknown aggregation function {function!r}; expected one of {', '.join(COMPONENTS)}")


def _sample_variance(partial: Partial) -> float | None:
    """Sample variance (n - 1 denominator) from (n, s, q); None below two values.

    `q - s²/n` cancels when the mean is large against the spread, and rounding
    can then make it slightly negative: that is clamped to 0.
    """
    n = partial.get("n", 0)
    if n < 2:
        return None
    s = partial["s"]
    var = (partial["q"] - s * s / n) / (n - 1)
    return var if var > 0.0 else 0.0
