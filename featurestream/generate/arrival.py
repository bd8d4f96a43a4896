"""Arrival (produce) order: event-time order, except a few events delayed within the lateness bound and a few far beyond."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LATE_MIN_FACTOR = 5      # late events trail the newest event already sent by more than this many latenesses
LATE_SPREAD_FACTOR = 15  # ... and by at most this many more


@dataclass(frozen=True)
class Arrival:
    order: np.ndarray          # event indices in arrival order
    out_of_order: np.ndarray   # bool per event: arrives after a newer event, lagging it by < lateness / 2
    late: np.ndarray           # bool per event: arrives after an event more than 5 x lateness newer


def arrival_order(rng: np.random.Generator, ts_ms: np.ndarray, lateness_ms: int,
                  out_of_order_fraction: float, late_fraction: float) -> Arrival:
    """Each delayed event is sent right after a chosen on-time event, so it is out of order by construction.

    An out-of-order event follows an on-time event newer than itself by less than lateness/2 (so it always
    stays inside the lateness bound); a late one follows an on-time event more than 5 x lateness newer.
    Events for which no such partner exists (at the very end, or in a quiet stretch) simply arrive on time.
    `ts_ms` must be ascending.
    """
    n = len(ts_ms)
    n_late, n_ooo = round(late_fraction * n), round(out_of_order_fraction * n)
    picked = rng.permutation(n)
    late_pick, ooo_pick = np.sort(picked[:n_late]), np.sort(picked[n_late:n_late + n_ooo])
    on_time = np.ones(n, dtype=bool)
    on_time[picked[:n_late + n_ooo]] = False
    anchors = ts_ms[on_time]           # ascending; events that turn out on time only add anchors
    arrive = ts_ms.copy()
    late = np.zeros(n, dtype=bool)
    out_of_order = np.zeros(n, dtype=bool)
    if len(anchors):
        min_lag = LATE_MIN_FACTOR * lateness_ms + 1
        wanted = ts_ms[late_pick] + min_lag + rng.integers(0, LATE_SPREAD_FACTOR * lateness_ms + 1, len(late_pick))
        anchor = anchors[np.minimum(np.searchsorted(anchors, wanted), len(anchors) - 1)]
        ok = anchor - ts_ms[late_pick] >= min_lag
        arrive[late_pick[ok]] = anchor[ok]
        late[late_pick[ok]] = True

        max_lag = (lateness_ms - 1) // 2     # strictly below lateness / 2
        nxt = anchors[np.minimum(np.searchsorted(anchors, ts_ms[ooo_pick], side="right"), len(anchors) - 1)]
        lag = nxt - ts_ms[ooo_pick]
        ok = (lag > 0) & (lag <= max_lag)
        extra = rng.integers(0, np.maximum(max_lag - lag, 0) + 1)
        arrive[ooo_pick[ok]] = nxt[ok] + extra[ok]
        out_of_order[ooo_pick[ok]] = True
    delayed = late | out_of_order
    # On equal arrival times the on-time event goes first, so the delayed one really trails it.
    order = np.lexsort((np.arange(n), delayed, arrive))
    return Arrival(order=order, out_of_order=out_of_order, late=late)
