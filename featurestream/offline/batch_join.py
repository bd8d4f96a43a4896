"""Point-in-time join of batch views: DuckDB ASOF joins, one per view, chained on the entity rows.

A training row at t sees the view's newest row with `row_ts <= t` (ties broken
by the created timestamp, newest first, as Feast does) and only while it is
within the ttl, `row_ts >= t - ttl` like Feast's `get_historical_features`.
The tie-break rides in the ASOF key itself, row_ts and created_ts packed into
one HUGEINT (row_ts in the high 64 bits), so it costs no extra deduplication
pass and compares as one integer rather than as a struct.
"""

from __future__ import annotations

from collections.abc import Sequence

from featurestream.definitions import BatchViewSpec
from featurestream.offline.engine import ident
from featurestream.offline.entities import ENTITY_TABLE, T
from featurestream.offline.plan import internal_name

_MIN_MS = -(2**62)
_MAX_MS = 2**62


def _asof_key(timestamp: str, created: str | None) -> str:
    created_ms = f"coalesce(epoch_ms({ident(created)}), {_MIN_MS})" if created else "0"
    return _packed(f"epoch_ms({ident(timestamp)})", created_ms)


def _packed(ts_ms: str, created_ms: str) -> str:
    """(ts, created) in one HUGEINT ordered as the pair: |created| < 2^63 never carries into ts's bits."""
    return f"(({ts_ms})::HUGEINT << 64) + ({created_ms})"


def batch_joins(views: Sequence[tuple[BatchViewSpec, str, Sequence[str]]], min_t: int, max_t: int,
                entity: str = "e") -> tuple[str, list[str]]:
    """The ASOF JOIN clauses to append after `FROM <entity rows> e`, and the feature expressions they add.

    `views` holds (spec, name of the DuckDB view over its source, features wanted); `min_t` and
    `max_t` bound the entity rows' times (ms), so rows no training row can see are never sorted.
    """
    joins: list[str] = []
    columns: list[str] = []
    for i, (view, source, features) in enumerate(views):
        alias = f"b{i}"
        keys = ", ".join(ident(k) for k in view.join_keys)
        wanted = ", ".join(ident(f) for f in features)
        ts = f"epoch_ms({ident(view.timestamp_field)})"
        # Only rows of entities asked for (a hash semi-join, whose key filter DuckDB also pushes into the
        # scan), and in the entity rows' time range: a row older than every training row's ttl is stale
        # for all of them. Both keep the ASOF join's sort small.
        oldest = f"{ts} >= {min_t - view.ttl_ms} AND " if view.ttl_ms else ""
        joins.append(
            f"ASOF LEFT JOIN (SELECT {keys}, {ts} AS __ts, "
            f"{_asof_key(view.timestamp_field, view.created_timestamp_column)} AS __k, {wanted} "
            f"FROM {ident(source)} SEMI JOIN (SELECT DISTINCT {keys} FROM {ENTITY_TABLE}) q USING ({keys}) "
            f"WHERE {oldest}{ts} <= {max_t}) {alias} ON "
            + " AND ".join(f"{entity}.{ident(k)} = {alias}.{ident(k)}" for k in view.join_keys)
            + f" AND {_packed(f'{entity}.{T}', str(_MAX_MS))} >= {alias}.__k")
        fresh = f"{alias}.__ts >= {entity}.{T} - {view.ttl_ms}" if view.ttl_ms else None
        for feature in features:
            value = f"{alias}.{ident(feature)}"
            expr = f"CASE WHEN {fresh} THEN {value} END" if fresh else value
            columns.append(f"{expr} AS {ident(internal_name(view.name, feature))}")
    return "\n".join(joins), columns
