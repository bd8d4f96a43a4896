"""SQL for the aggregation functions' `finalize`, as in featurestream.windows.aggregations.

Each aggregation's components (n, s, q, lo, hi, lv; computed per training row
by featurestream.offline.frames) become the feature with the same finalize
arithmetic as online: `mean = s / n`, sample variance `(q - s*s/n) / (n - 1)`
clamped at 0, sums of an empty window 0, `last` the value with the greatest
(event time, partition, offset).
"""

from __future__ import annotations

# Feast type names -> DuckDB types, so the training set has the declared types.
FEAST_SQL_TYPES = {"Int64": "BIGINT", "Int32": "INTEGER", "Float64": "DOUBLE", "Float32": "FLOAT",
                   "String": "VARCHAR", "Bool": "BOOLEAN", "UnixTimestamp": "TIMESTAMPTZ", "Bytes": "BLOB"}


def finalize_sql(function: str, prefix: str) -> str:
    """The feature value from the components named `prefix_<component>`."""
    n, s, q = f"{prefix}_n", f"{prefix}_s", f"{prefix}_q"
    variance = f"CASE WHEN {n} >= 2 THEN greatest(({q} - {s}::DOUBLE * {s}::DOUBLE / {n}) / ({n} - 1), 0.0) END"
    return {
        "count": n,
        "sum": f"coalesce({s}, 0)",
        "mean": f"CASE WHEN {n} > 0 THEN {s} / {n} END",
        "min": f"{prefix}_lo",
        "max": f"{prefix}_hi",
        "last": f"{prefix}_lv",
        "var": variance,
        "stddev": f"sqrt({variance})",
    }[function]


def typed(expr: str, feast_type: str | None) -> str:
    """Cast to the feature's declared type (left as is for types without a mapping)."""
    sql_type = FEAST_SQL_TYPES.get(feast_type or "")
    return f"CAST({expr} AS {sql_type})" if sql_type else expr
