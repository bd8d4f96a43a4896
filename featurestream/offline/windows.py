"""Windowed features at each training row's time, from the event log, with the online tile semantics.

The window of an aggregation at t covers `floor_S(t) - W + S <= ts <= t`. The
entity rows are unioned with the events and every aggregation is a SQL window
over event time with a per-row RANGE frame of `t % S + W - S` before t up to t
(peers included, so events at exactly t count): one sort per view, no range
join, whatever the window lengths.
"""

from __future__ import annotations

from collections.abc import Sequence

from featurestream.definitions import StreamViewSpec
from featurestream.offline.aggregates import component_columns, finalize_sql, typed
from featurestream.offline.engine import ident
from featurestream.offline.entities import ENTITY_TABLE, ROW, T
from featurestream.offline.events import SEQ, TS
from featurestream.offline.plan import internal_name


def window_features_sql(view: StreamViewSpec, events: str, features: Sequence[str]) -> str:
    """A query giving `__row` and each wanted feature (as `view__feature`) for every entity row."""
    aggs = [a for a in view.aggregations if a.name in features]
    keys = ", ".join(ident(k) for k in view.join_keys)
    value_columns = sorted({a.column for a in aggs})
    values = "".join(f", {ident(c)}" for c in value_columns)
    longest = max(a.window_ms for a in aggs if a.window_ms)
    not_null = " AND ".join(f"{ident(k)} IS NOT NULL" for k in view.join_keys)
    frames = sorted({(a.window_ms, a.slide_ms) for a in aggs})
    windows = ", ".join(
        f"w{i} AS (PARTITION BY {keys} ORDER BY {TS} RANGE BETWEEN ({TS} % {slide} + {window - slide}) "
        "PRECEDING AND CURRENT ROW)" for i, (window, slide) in enumerate(frames))
    components = [c for j, a in enumerate(aggs)
                  for c in component_columns(a, f"a{j}", f"w{frames.index((a.window_ms, a.slide_ms))}")]
    finals = [f"{typed(finalize_sql(a.function, f'a{j}'), view.feature_types.get(a.name))} "
              f"AS {ident(internal_name(view.name, a.name))}" for j, a in enumerate(aggs)]
    return f"""
SELECT {ROW}, {', '.join(finals)} FROM (
  SELECT {ROW}, {', '.join(components)} FROM (
    SELECT {keys}, {TS}, {SEQ}{values}, NULL::BIGINT AS {ROW} FROM {ident(events)} ev
      SEMI JOIN (SELECT DISTINCT {keys} FROM {ENTITY_TABLE}) q USING ({keys})
      WHERE {not_null} AND {TS} >= (SELECT min({T}) FROM {ENTITY_TABLE}) - {longest}
    UNION ALL BY NAME
    SELECT {keys}, {T} AS {TS}, {ROW} FROM {ENTITY_TABLE}
  ) u
  WINDOW {windows}
  QUALIFY {ROW} IS NOT NULL
)"""
