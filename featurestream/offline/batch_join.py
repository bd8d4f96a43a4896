"""Point-in-time join of batch views: DuckDB ASOF joins, one per view, chained on the entity rows.

A training row at t sees the view's newest row with `row_ts <= t` (ties broken
by the created timestamp, newest first, as Feast does) and only while it is
within the ttl, `row_ts >= t - ttl` like Feast's `get_historical_features`.
The tie-break rides in the ASOF key itself, a (row_ts, created_ts) struct, so
it costs no extra deduplication pass.
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
    return f"{{'ts': epoch_ms({ident(timestamp)}), 'created': {created_ms}}}"


def batch_joins(views: Sequence[tuple[BatchViewSpec, str, Sequence[str]]], entity: str = "e") -> tuple[str, list[str]]:
    """The ASOF JOIN clauses to append after `FROM <entity rows> e`, and the feature expressions they add.

    `views` holds (spec, name of the DuckDB view over its source, features wanted).
    """
    joins: list[str] = []
    columns: list[str] = []
    for i, (view, source, features) in enumerate(views):
        alias = f"b{i}"
        keys = ", ".join(ident(k) for k in view.join_keys)
        wanted = ", ".join(ident(f) for f in features)
        # Only rows of entities asked for, and not after the last row time: a cheap hash semi-join
        # that keeps the ASOF join's sort small when the entity rows are few.
        joins.append(
            f"ASOF LEFT JOIN (SELECT {keys}, epoch_ms({ident(view.timestamp_field)}) AS __ts, "
            f"{_asof_key(view.timestamp_field, view.created_timestamp_column)} AS __k, {wanted} "
            f"FROM {ident(source)} SEMI JOIN (SELECT DISTINCT {keys} FROM {ENTITY_TABLE}) q USING ({keys}) "
            f"WHERE epoch_ms({ident(view.timestamp_field)}) <= (SELECT max({T}) FROM {ENTITY_TABLE})) {alias} ON "
            + " AND ".join(f"{entity}.{ident(k)} = {alias}.{ident(k)}" for k in view.join_keys)
            + f" AND {{'ts': {entity}.{T}, 'created': {_MAX_MS}}} >= {alias}.__k")
        fresh = f"{alias}.__ts >= {entity}.{T} - {view.ttl_ms}" if view.ttl_ms else None
        for feature in features:
            value = f"{alias}.{ident(feature)}"
            expr = f"CASE WHEN {fresh} THEN {value} END" if fresh else value
            columns.append(f"{expr} AS {ident(internal_name(view.name, feature))}")
    return "\n".join(joins), columns
