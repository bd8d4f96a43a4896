"""Feast registry -> validated runtime specs.

Feast accepts definitions featurestream cannot run (a slide that does not divide
its window, a median aggregation, a session gap like "soon"); this is where they
are rejected, with a message naming the view and the problem.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

from featurestream.definitions.specs import (
    AGGREGATION_FUNCTIONS,
    NUMERIC_FUNCTIONS,
    SESSION_BUILTINS,
    AggregationSpec,
    BatchViewSpec,
    DefinitionError,
    FeatureServiceSpec,
    OnDemandViewSpec,
    RepoSpecs,
    StreamSourceSpec,
    StreamViewSpec,
)
from featurestream.durations import parse_duration_ms

SESSION_GAP_TAG = "featurestream.session_gap"
SCHEMA_TYPES = {
    "string": "string", "varchar": "string",
    "bigint": "bigint", "long": "bigint", "int": "bigint", "integer": "bigint",
    "double": "double", "float": "double",
    "boolean": "boolean", "bool": "boolean",
    "timestamp": "timestamp",
}


def _import_from(repo_path: Path) -> None:
    """Make the repo's modules importable, and the ones imported, this repo's own.

    Two repos (a copy in a test, another project) have modules of the same names;
    a module already imported from the other one would otherwise be reused.
    """
    root = str(repo_path.resolve())
    if root in sys.path:
        sys.path.remove(root)
    sys.path.insert(0, root)
    for source in repo_path.glob("*.py"):
        module = sys.modules.get(source.stem)
        origin = getattr(module, "__file__", None) if module is not None else None
        if origin is not None and Path(origin).resolve().parent != Path(root):
            del sys.modules[source.stem]


def load_repo(repo_path: Path) -> RepoSpecs:
    """Read the applied registry of the Feast repo at `repo_path` and validate it."""
    from feast import FeatureStore

    if not (repo_path / "feature_store.yaml").is_file():
        raise DefinitionError(f"{repo_path} is not a Feast repo: it has no feature_store.yaml")
    _import_from(repo_path)  # udfs are pickled by reference to the repo's modules
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        store = FeatureStore(repo_path=str(repo_path))
        return specs_from_objects(
            project=store.project,
            entities=store.list_entities(),
            feature_views=store.list_feature_views(),
            stream_feature_views=store.list_stream_feature_views(),
            on_demand_feature_views=store.list_on_demand_feature_views(),
            feature_services=store.list_feature_services(),
        )


def specs_from_objects(
    *,
    project: str,
    entities: Iterable[Any],
    feature_views: Iterable[Any],
    stream_feature_views: Iterable[Any],
    on_demand_feature_views: Iterable[Any] = (),
    feature_services: Iterable[Any] = (),
) -> RepoSpecs:
    """Convert Feast objects (from a registry or built in code) to specs, validating each."""
    entities = list(entities)
    join_keys = {e.name: e.join_key for e in entities}
    stream = {v.name: stream_view_spec(v, join_keys) for v in stream_feature_views}
    batch = {v.name: batch_view_spec(v, join_keys) for v in feature_views if v.name not in stream}
    on_demand = {v.name: on_demand_view_spec(v) for v in on_demand_feature_views}
    known = {**stream, **batch, **on_demand}
    services = {s.name: feature_service_spec(s, known) for s in feature_services}
    key_types = {e.join_key: e.value_type.name for e in entities}
    return RepoSpecs(project, stream, batch, on_demand, services, key_types)


def _ms(delta: timedelta | None) -> int | None:
    if delta is None:
        return None
    return round(delta.total_seconds() * 1000)


def _feature_types(view: Any) -> dict[str, str]:
    return {f.name: str(f.dtype) for f in view.features}


def _entity_keys(view: Any, join_keys: dict[str, str]) -> tuple[str, ...]:
    missing = [e for e in view.entities if e not in join_keys]
    if missing:
        raise DefinitionError(f"feature view {view.name!r}: unknown entity {', '.join(missing)}")
    keys = tuple(join_keys[e] for e in view.entities)
    if not keys:
        raise DefinitionError(f"feature view {view.name!r} has no entity")
    return keys


def parse_json_schema(view_name: str, schema_json: str) -> dict[str, str]:
    """The KafkaSource's `JsonFormat(schema_json="name type, ...")` as column -> type."""
    columns: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in schema_json.split(","))):
        name, _, kind = part.partition(" ")
        kind = kind.strip().lower()
        if kind not in SCHEMA_TYPES:
            raise DefinitionError(
                f"stream feature view {view_name!r}: column {name!r} of the source schema has type {kind!r}; "
                f"supported: {', '.join(sorted(set(SCHEMA_TYPES.values())))}"
            )
        columns[name] = SCHEMA_TYPES[kind]
    if not columns:
        raise DefinitionError(f"stream feature view {view_name!r}: the source's JSON schema is empty")
    return columns


def _stream_source_spec(view: Any) -> StreamSourceSpec:
    source = view.stream_source
    options = getattr(source, "kafka_options", None)
    if options is None:
        raise DefinitionError(
            f"stream feature view {view.name!r}: source {source.name!r} is a {type(source).__name__}; "
            "featurestream reads KafkaSource only"
        )
    schema_json = getattr(options.message_format, "schema_json", None)
    if schema_json is None:
        raise DefinitionError(
            f"stream feature view {view.name!r}: source {source.name!r} must use JsonFormat(schema_json=...)"
        )
    if not options.topic:
        raise DefinitionError(f"stream feature view {view.name!r}: source {source.name!r} names no topic")
    schema = parse_json_schema(view.name, schema_json)
    if source.timestamp_field and source.timestamp_field not in schema:
        raise DefinitionError(
            f"stream feature view {view.name!r}: timestamp field {source.timestamp_field!r} "
            f"is not in the schema of source {source.name!r}"
        )
    batch = getattr(source, "batch_source", None)
    return StreamSourceSpec(
        name=source.name,
        topic=options.topic,
        bootstrap_servers=options.kafka_bootstrap_servers or "",
        timestamp_field=source.timestamp_field,
        schema=schema,
        lateness_ms=_ms(options.watermark_delay_threshold) or 0,
        event_log_path=getattr(batch, "path", None) if batch is not None else None,
    )


def _aggregation_spec(view_name: str, agg: Any, session: bool) -> AggregationSpec:
    window = _ms(agg.time_window)
    name = agg.name or agg.resolved_name(agg.time_window)
    where = f"stream feature view {view_name!r}, aggregation {name!r}"
    if agg.function not in AGGREGATION_FUNCTIONS:
        raise DefinitionError(
            f"{where}: unknown function {agg.function!r}; supported: {', '.join(AGGREGATION_FUNCTIONS)}"
        )
    if not agg.column:
        raise DefinitionError(f"{where}: names no column")
    if session:
        if window:
            raise DefinitionError(f"{where}: a session aggregation has no time_window (it covers the session)")
        return AggregationSpec(name, agg.column, agg.function)
    if not window:
        raise DefinitionError(f"{where}: needs a time_window (or tag the view {SESSION_GAP_TAG}=<gap>)")
    slide = _ms(agg.slide_interval) or window
    if slide <= 0 or window <= 0 or window % slide:
        raise DefinitionError(
            f"{where}: slide_interval {agg.slide_interval} does not divide time_window {agg.time_window}"
        )
    return AggregationSpec(name, agg.column, agg.function, window, slide)


def _check_columns(view_name: str, aggregations: tuple[AggregationSpec, ...], source: StreamSourceSpec) -> None:
    """Without a udf, each aggregated column must be the source's, and one added up must hold numbers."""
    for agg in aggregations:
        where = f"stream feature view {view_name!r}, aggregation {agg.name!r}"
        kind = source.schema.get(agg.column)
        if kind is None:
            raise DefinitionError(f"{where}: column {agg.column!r} is not in the schema of source {source.name!r}, "
                                  "and the view has no udf to derive it")
        if agg.function in NUMERIC_FUNCTIONS and kind not in ("bigint", "double", "boolean"):
            raise DefinitionError(f"{where}: {agg.function} adds numbers up, but column {agg.column!r} is a {kind}")


def stream_view_spec(view: Any, join_keys: dict[str, str]) -> StreamViewSpec:
    if not view.timestamp_field:
        raise DefinitionError(f"stream feature view {view.name!r} has no timestamp_field")
    gap_text = (view.tags or {}).get(SESSION_GAP_TAG)
    gap_ms = None
    if gap_text is not None:
        try:
            gap_ms = parse_duration_ms(gap_text)
        except ValueError as exc:
            raise DefinitionError(f"stream feature view {view.name!r}: tag {SESSION_GAP_TAG}: {exc}") from None
    aggregations = tuple(_aggregation_spec(view.name, a, gap_ms is not None) for a in view.aggregations)
    if not aggregations and gap_ms is None:
        raise DefinitionError(f"stream feature view {view.name!r} has no aggregation")
    names = [a.name for a in aggregations]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DefinitionError(f"stream feature view {view.name!r}: aggregation names repeat: {', '.join(duplicates)}")
    declared = _feature_types(view)
    outputs = [*(SESSION_BUILTINS if gap_ms is not None else ()), *names]
    undeclared = [n for n in outputs if n not in declared]
    if undeclared:
        raise DefinitionError(
            f"stream feature view {view.name!r}: declare {', '.join(undeclared)} in its schema "
            "(so Feast and the serving API know the types)"
        )
    source = _stream_source_spec(view)
    if view.udf is None:  # the aggregations read the source's columns as they are
        _check_columns(view.name, aggregations, source)
    if view.timestamp_field not in source.schema:
        raise DefinitionError(
            f"stream feature view {view.name!r}: timestamp field {view.timestamp_field!r} "
            f"is not a column of source {source.name!r}"
        )
    keys = _entity_keys(view, join_keys)
    missing_keys = [k for k in keys if k not in source.schema]
    if missing_keys:
        raise DefinitionError(
            f"stream feature view {view.name!r}: join key {', '.join(missing_keys)} is not in the schema of "
            f"source {source.name!r}; events must carry the keys of every view they feed"
        )
    return StreamViewSpec(
        name=view.name,
        join_keys=keys,
        source=source,
        timestamp_field=view.timestamp_field,
        aggregations=aggregations,
        session_gap_ms=gap_ms,
        udf=view.udf,
        ttl_ms=_ms(view.ttl) or None,
        feature_types={n: declared[n] for n in outputs},
    )


def batch_view_spec(view: Any, join_keys: dict[str, str]) -> BatchViewSpec:
    source = view.batch_source
    path = getattr(source, "path", None)
    if not path:
        raise DefinitionError(f"feature view {view.name!r}: its source {source.name!r} has no path DuckDB can read")
    if not source.timestamp_field:
        raise DefinitionError(f"feature view {view.name!r}: its source {source.name!r} has no timestamp_field")
    return BatchViewSpec(
        name=view.name,
        join_keys=_entity_keys(view, join_keys),
        source_path=path,
        timestamp_field=source.timestamp_field,
        created_timestamp_column=source.created_timestamp_column or None,
        ttl_ms=_ms(view.ttl) or None,
        feature_types=_feature_types(view),
    )


def on_demand_view_spec(view: Any) -> OnDemandViewSpec:
    request_fields = {
        field.name: str(field.dtype)
        for request in view.source_request_sources.values()
        for field in request.schema
    }
    transformation = view.feature_transformation
    if transformation is None or getattr(transformation, "udf", None) is None:
        raise DefinitionError(f"on demand feature view {view.name!r} has no transformation")
    return OnDemandViewSpec(
        name=view.name,
        request_fields=request_fields,
        source_views=tuple(view.source_feature_view_projections),
        feature_types=_feature_types(view),
        mode=str(view.mode),
        transform=transformation.udf,
    )


def feature_service_spec(service: Any, known: dict[str, Any]) -> FeatureServiceSpec:
    refs = []
    for projection in service.feature_view_projections:
        view = known.get(projection.name)
        if view is None:
            raise DefinitionError(f"feature service {service.name!r}: unknown feature view {projection.name!r}")
        names = [f.name for f in projection.features] or list(view.feature_names)
        refs.extend(f"{projection.name_to_use()}:{name}" for name in names)
    return FeatureServiceSpec(service.name, tuple(refs))


def check_repo(repo_path: Path) -> RepoSpecs:
    """Validate the repo's Python definitions before `feast apply` writes them to the registry."""
    import contextlib

    import yaml
    from feast.repo_operations import parse_repo

    config_file = repo_path / "feature_store.yaml"
    if not config_file.is_file():
        raise DefinitionError(f"{repo_path} is not a Feast repo: it has no feature_store.yaml")
    project = (yaml.safe_load(config_file.read_text()) or {}).get("project", "")
    _import_from(repo_path)
    with contextlib.chdir(repo_path), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            contents = parse_repo(repo_path)
        except (ValueError, TypeError) as exc:
            raise DefinitionError(f"Feast rejected a definition in {repo_path}: {exc}") from None
    return specs_from_objects(
        project=project,
        entities=contents.entities,
        feature_views=contents.feature_views,
        stream_feature_views=contents.stream_feature_views,
        on_demand_feature_views=contents.on_demand_feature_views,
        feature_services=contents.feature_services,
    )
