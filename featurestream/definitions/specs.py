"""Runtime specs: plain, validated, immutable views of the Feast objects.

The materializers, the serving API and the offline engine read these instead of
Feast objects, so the semantics of DESIGN.md live in one vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

AGGREGATION_FUNCTIONS = ("count", "sum", "mean", "min", "max", "stddev", "var", "last")
# Functions that add their column's values up: only numbers (or nulls) are taken.
NUMERIC_FUNCTIONS = ("sum", "mean", "stddev", "var")
SESSION_BUILTINS = ("session_start", "session_event_count", "session_duration_s")


class DefinitionError(ValueError):
    """A feature definition that featurestream cannot run; the message names the view."""


@dataclass(frozen=True)
class AggregationSpec:
    """One output feature of a stream view; window_ms/slide_ms are None for session aggregations."""

    name: str
    column: str
    function: str
    window_ms: int | None = None
    slide_ms: int | None = None


@dataclass(frozen=True)
class StreamSourceSpec:
    """A KafkaSource: where events come from and what they must look like."""

    name: str
    topic: str
    bootstrap_servers: str
    timestamp_field: str
    schema: dict[str, str]  # column -> one of: string, bigint, double, boolean, timestamp
    lateness_ms: int
    event_log_path: str | None


@dataclass(frozen=True)
class StreamViewSpec:
    """A windowed or session StreamFeatureView."""

    name: str
    join_keys: tuple[str, ...]
    source: StreamSourceSpec
    timestamp_field: str
    aggregations: tuple[AggregationSpec, ...]
    session_gap_ms: int | None = None
    udf: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    ttl_ms: int | None = None
    feature_types: dict[str, str] = field(default_factory=dict)  # feature -> Feast type name

    @property
    def is_session(self) -> bool:
        return self.session_gap_ms is not None

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Output features in schema order; session views add the built-ins first."""
        return tuple(self.feature_types)


@dataclass(frozen=True)
class BatchViewSpec:
    """A FeatureView over a batch source (Parquet / DuckDB)."""

    name: str
    join_keys: tuple[str, ...]
    source_path: str
    timestamp_field: str
    created_timestamp_column: str | None
    ttl_ms: int | None
    feature_types: dict[str, str]

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(self.feature_types)


@dataclass(frozen=True)
class OnDemandViewSpec:
    """An OnDemandFeatureView: request fields plus features of other views, into new features."""

    name: str
    request_fields: dict[str, str]
    source_views: tuple[str, ...]
    feature_types: dict[str, str]
    mode: str
    transform: Callable[[Any], Any]

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(self.feature_types)


@dataclass(frozen=True)
class FeatureServiceSpec:
    """A FeatureService as a list of `view:feature` references."""

    name: str
    features: tuple[str, ...]


@dataclass(frozen=True)
class RepoSpecs:
    """Everything the runtime needs from one Feast project."""

    project: str
    stream_views: dict[str, StreamViewSpec]
    batch_views: dict[str, BatchViewSpec]
    on_demand_views: dict[str, OnDemandViewSpec]
    feature_services: dict[str, FeatureServiceSpec]
    join_key_types: dict[str, str] = field(default_factory=dict)  # join key -> Feast ValueType name, e.g. INT64
