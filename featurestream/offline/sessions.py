"""Session features at each training row's time, from the event log, with the online session semantics.

Events of an entity, sorted by time, split into sessions where consecutive
times are more than G apart. Each event carries its session's running
features up to and including its time (peers included); an ASOF join then
gives each training row the latest event with `ts <= t`, and the session is
active only if `t - ts <= G`, else count 0 and the rest null.
"""

from __future__ import annotations

from collections.abc import Sequence

from featurestream.definitions import StreamViewSpec
from featurestream.offline.aggregates import component_columns, finalize_sql, typed
from featurestream.offline.engine import ident
from featurestream.offline.entities import ENTITY_TABLE, ROW, T
from featurestream.offline.events import SEQ, TS
from featurestream.offline.plan import internal_name


def session_features_sql(view: StreamViewSpec, events: str, features: Sequence[str]) -> str:
    """A query giving `__row` and each wanted feature (as `view__feature`) for every entity row."""
    gap = view.session_gap_ms
    aggs = [a for a in view.aggregations if a.name in features]
    keys = ", ".join(ident(k) for k in view.join_keys)
    values = "".join(f", {ident(c)}" for c in sorted({a.column for a in aggs}))
    not_null = " AND ".join(f"{ident(k)} IS NOT NULL" for k in view.join_keys)
    components = "".join(f", {c}" for j, a in enumerate(aggs) for c in component_columns(a, f"a{j}", "ws"))
    active = f"(r.{TS} IS NOT NULL AND e.{T} - r.{TS} <= {gap})"
    builtins = {
        "session_start": f"CASE WHEN {active} THEN epoch_ms(r.__start) END",
        "session_event_count": f"CASE WHEN {active} THEN r.__count ELSE 0 END",
        "session_duration_s": f"CASE WHEN {active} THEN (r.{TS} - r.__start) / 1000.0 END",
    }
    finals = {a.name: f"CASE WHEN {active} THEN {finalize_sql(a.function, f'r.a{j}')} END"
              for j, a in enumerate(aggs)}
    outputs = ", ".join(f"{typed(expr, view.feature_types.get(name))} AS {ident(internal_name(view.name, name))}"
                        for name, expr in {**builtins, **finals}.items() if name in features)
    on_keys = " AND ".join(f"e.{ident(k)} = r.{ident(k)}" for k in view.join_keys)
    return f"""
SELECT e.{ROW}, {outputs} FROM {ENTITY_TABLE} e ASOF LEFT JOIN (
  SELECT {keys}, {TS}, min({TS}) OVER (PARTITION BY {keys}, __sid) AS __start, count(*) OVER ws AS __count{components}
  FROM (
    SELECT *, sum(__brk) OVER (PARTITION BY {keys} ORDER BY {TS}, {SEQ} ROWS UNBOUNDED PRECEDING) AS __sid FROM (
      SELECT {keys}, {TS}, {SEQ}{values},
        CASE WHEN {TS} - lag({TS}) OVER (PARTITION BY {keys} ORDER BY {TS}, {SEQ}) > {gap} THEN 1 ELSE 0 END AS __brk
      FROM {ident(events)} SEMI JOIN (SELECT DISTINCT {keys} FROM {ENTITY_TABLE}) q USING ({keys})
      WHERE {not_null}
    )
  )
  WINDOW ws AS (PARTITION BY {keys}, __sid ORDER BY {TS} RANGE UNBOUNDED PRECEDING)
) r ON {on_keys} AND e.{T} >= r.{TS}"""
