"""On-demand features on the joined training rows, through the same call the serving API makes."""

from __future__ import annotations

import pyarrow as pa

from featurestream.definitions import OnDemandViewSpec, RepoSpecs
from featurestream.ondemand import OnDemandError, run_on_demand
from featurestream.offline.errors import OfflineError
from featurestream.offline.plan import internal_name

ARROW_TYPES = {"Int64": pa.int64(), "Int32": pa.int32(), "Float64": pa.float64(), "Float32": pa.float32(),
               "String": pa.string(), "Bool": pa.bool_(), "UnixTimestamp": pa.timestamp("ms", tz="UTC"),
               "Bytes": pa.binary()}


def check_request_fields(specs: RepoSpecs, views: tuple[str, ...], entity_columns: tuple[str, ...]) -> None:
    """Request fields come from the entity rows' columns; name the missing ones up front."""
    for name in views:
        missing = [f for f in specs.on_demand_views[name].request_fields if f not in entity_columns]
        if missing:
            raise OfflineError(f"on demand feature view {name!r} needs request field {', '.join(missing)}: "
                               "add it as a column of the entity rows")


def apply_on_demand(batch: pa.RecordBatch, spec: OnDemandViewSpec, source_features: dict[str, tuple[str, ...]]
                    ) -> dict[str, pa.Array]:
    """The view's features for one batch, as `view__feature` columns of the declared types."""
    inputs = {field: batch.column(field).to_pylist() for field in spec.request_fields}
    for view, features in source_features.items():
        for feature in features:
            inputs[feature] = batch.column(internal_name(view, feature)).to_pylist()
    try:
        produced = run_on_demand(spec, inputs, batch.num_rows)
    except OnDemandError as exc:
        raise OfflineError(str(exc)) from exc
    return {internal_name(spec.name, feature): pa.array(values, ARROW_TYPES.get(spec.feature_types[feature]))
            for feature, values in produced.items()}
