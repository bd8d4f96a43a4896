"""Feature definitions as validated runtime specs, loaded from the Feast registry."""

from featurestream.definitions.loader import check_repo, load_repo, specs_from_objects
from featurestream.definitions.specs import (
    AGGREGATION_FUNCTIONS,
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

__all__ = [
    "AGGREGATION_FUNCTIONS",
    "SESSION_BUILTINS",
    "AggregationSpec",
    "BatchViewSpec",
    "DefinitionError",
    "FeatureServiceSpec",
    "OnDemandViewSpec",
    "RepoSpecs",
    "StreamSourceSpec",
    "StreamViewSpec",
    "check_repo",
    "load_repo",
    "specs_from_objects",
]
