"""Windowed features at each training row's time, from the event log, with the online tile semantics.

The window of an aggregation at t covers `floor_S(t) - W + S <= ts <= t`
(events at exactly t included): per training row, a frame of the view's
sorted events whose components `featurestream.offline.frames` reduces; the
finalize arithmetic and the declared types are applied in SQL, as for sessions.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import numpy as np
import pyarrow as pa

from featurestream.definitions import StreamViewSpec
from featurestream.offline.aggregates import finalize_sql, typed
from featurestream.offline.engine import ident
from featurestream.offline.entities import ROW
from featurestream.offline.frames import Events, components, positions, store
from featurestream.offline.plan import internal_name


def window_features_sql(con: duckdb.DuckDBPyConnection, view: StreamViewSpec, events: Events,
                        features: Sequence[str], name: str) -> str:
    """Store the rows' components as table `name`; a query giving `__row` and each wanted feature (`view__feature`)."""
    aggs = [a for a in view.aggregations if a.name in features]
    end = events.end
    starts: dict[tuple[int, int], np.ndarray] = {}
    columns: dict[str, pa.Array] = {ROW: pa.array(events.row)}
    for j, agg in enumerate(aggs):
        window, slide = agg.window_ms or 0, agg.slide_ms or 0
        if (window, slide) not in starts:
            lower = events.t - np.mod(events.t, slide) - window + slide
            starts[window, slide] = positions(events, lower, right=False)
        columns.update(components(events, agg, starts[window, slide], end, f"a{j}"))
    store(con, name, columns)
    finals = [f"{typed(finalize_sql(a.function, f'a{j}'), view.feature_types.get(a.name))} "
              f"AS {ident(internal_name(view.name, a.name))}" for j, a in enumerate(aggs)]
    return f"SELECT {ROW}, {', '.join(finals)} FROM {ident(name)}"
