"""Session features at each training row's time, from the event log, with the online session semantics.

An entity's events, sorted by time, split into sessions where consecutive
times are more than G apart. A training row at t looks at the latest event
with `ts <= t`: if `t - ts <= G` its session is active and the features are
over that session's events up to t (peers included), else count 0 and the
rest null. The frame reductions are `featurestream.offline.frames`'.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from featurestream.definitions import StreamViewSpec
from featurestream.offline.aggregates import finalize_sql, typed
from featurestream.offline.engine import ident
from featurestream.offline.frames import Events, Rows, components
from featurestream.offline.plan import internal_name


def session_features(view: StreamViewSpec, events: Events, rows: Rows, end: np.ndarray, features: Sequence[str]
                     ) -> tuple[dict[str, pa.Array], list[str]]:
    """The sorted rows' session state, and the SQL selecting each wanted feature (`view__feature`) from it."""
    gap = view.session_gap_ms or 0
    count = len(events.ts)
    session_first = events.once(("session_first", str(gap)), lambda: _session_first(events, gap))
    latest = np.maximum(end - 1, 0)
    if count:
        active = (end > 0) & (events.kid[latest] == rows.kid) & (rows.t - events.ts[latest] <= gap)
        first = np.where(active, session_first[latest], end)
        first_ts, latest_ts = events.ts[first.clip(max=count - 1)], events.ts[latest]
    else:
        active = np.zeros(len(end), bool)
        first, first_ts, latest_ts = end, end, end
    aggs = [a for a in view.aggregations if a.name in features]
    columns: dict[str, pa.Array] = {"__active": pa.array(active), "__start": pa.array(first_ts),
                                    "__latest": pa.array(latest_ts), "__count": pa.array(end - first)}
    for j, agg in enumerate(aggs):
        columns.update(components(events, agg, first, end, f"a{j}"))
    builtins = {
        "session_start": "CASE WHEN __active THEN epoch_ms(__start) END",
        "session_event_count": "CASE WHEN __active THEN __count ELSE 0 END",
        "session_duration_s": "CASE WHEN __active THEN (__latest - __start) / 1000.0 END",
    }
    finals = {a.name: f"CASE WHEN __active THEN {finalize_sql(a.function, f'a{j}')} END" for j, a in enumerate(aggs)}
    return columns, [f"{typed(expr, view.feature_types.get(feature))} AS {ident(internal_name(view.name, feature))}"
                     for feature, expr in {**builtins, **finals}.items() if feature in features]


def _session_first(events: Events, gap: int) -> np.ndarray:
    """Per event, the index of the first event of its session."""
    count = len(events.ts)
    breaks = np.ones(count, bool)
    breaks[1:] = (events.kid[1:] != events.kid[:-1]) | (np.diff(events.ts) > gap)
    return np.maximum.accumulate(np.where(breaks, np.arange(count), 0))
