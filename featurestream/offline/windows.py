"""Windowed features at each training row's time, from the event log, with the online tile semantics.

The window of an aggregation at t covers `floor_S(t) - W + S <= ts <= t`
(events at exactly t included): per training row, a frame of the view's
sorted events whose components `featurestream.offline.frames` reduces; the
finalize arithmetic and the declared types are applied in SQL, as for sessions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from featurestream.definitions import StreamViewSpec
from featurestream.offline.aggregates import finalize_sql, typed
from featurestream.offline.engine import ident
from featurestream.offline.frames import Events, Rows, components, positions
from featurestream.offline.plan import internal_name


def window_features(view: StreamViewSpec, events: Events, rows: Rows, end: np.ndarray, features: Sequence[str]
                    ) -> tuple[dict[str, pa.Array], list[str]]:
    """The sorted rows' components, and the SQL selecting each wanted feature (`view__feature`) from them.

    `end` is where each row's events at or before its time end (shared by the views of these events).
    """
    aggs = [a for a in view.aggregations if a.name in features]
    starts: dict[tuple[int, int], np.ndarray] = {}
    columns: dict[str, pa.Array] = {}
    for j, agg in enumerate(aggs):
        window, slide = agg.window_ms or 0, agg.slide_ms or 0
        if (window, slide) not in starts:
            lower = rows.t - np.mod(rows.t, slide) - window + slide
            starts[window, slide] = positions(events.kid, events.ts, rows, lower, right=False)
        columns.update(components(events, agg, starts[window, slide], end, f"a{j}"))
    finals = [f"{typed(finalize_sql(a.function, f'a{j}'), view.feature_types.get(a.name))} "
              f"AS {ident(internal_name(view.name, a.name))}" for j, a in enumerate(aggs)]
    return columns, finals
