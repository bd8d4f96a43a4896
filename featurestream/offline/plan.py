"""Which views and features a request needs, and what the output columns are called.

Names follow Feast's `get_historical_features`: `feature`, or `view__feature`
with `full_feature_names`; without full names two views giving the same
feature name is an error, as in Feast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from featurestream.definitions import BatchViewSpec, OnDemandViewSpec, RepoSpecs, StreamViewSpec
from featurestream.offline.errors import OfflineError


@dataclass(frozen=True)
class Plan:
    """The features to compute per view (requested ones plus on-demand inputs) and the columns to return."""

    batch: dict[str, tuple[str, ...]] = field(default_factory=dict)
    stream: dict[str, tuple[str, ...]] = field(default_factory=dict)
    on_demand: tuple[str, ...] = ()
    outputs: tuple[tuple[str, str], ...] = ()  # (internal column `view__feature`, output name), requested order


def internal_name(view: str, feature: str) -> str:
    return f"{view}__{feature}"


def resolve_refs(specs: RepoSpecs, features: Sequence[str] | None, feature_service: str | None) -> list[str]:
    """The `view:feature` references of a request (exactly one of features / feature_service)."""
    if (features is None) == (feature_service is None):
        raise OfflineError("give exactly one of features or feature_service")
    if feature_service is not None:
        service = specs.feature_services.get(feature_service)
        if service is None:
            known = ", ".join(sorted(specs.feature_services)) or "none"
            raise OfflineError(f"unknown feature service {feature_service!r}; known: {known}")
        return list(service.features)
    refs = list(features or [])
    if not refs:
        raise OfflineError("no features requested")
    return refs


def build_plan(specs: RepoSpecs, refs: Sequence[str], full_feature_names: bool) -> Plan:
    """Validate the references and work out what to compute; unknown views or features raise OfflineError."""
    views: dict[str, StreamViewSpec | BatchViewSpec | OnDemandViewSpec] = {
        **specs.batch_views, **specs.stream_views, **specs.on_demand_views}
    wanted: dict[str, list[str]] = {}
    outputs: list[tuple[str, str]] = []
    for ref in refs:
        view_name, sep, feature = ref.partition(":")
        if not sep or not view_name or not feature:
            raise OfflineError(f"feature reference {ref!r} is not of the form view:feature")
        view = views.get(view_name)
        if view is None:
            raise OfflineError(f"unknown feature view {view_name!r} in {ref!r}; known: {', '.join(sorted(views))}")
        if feature not in view.feature_names:
            raise OfflineError(f"feature view {view_name!r} has no feature {feature!r}; "
                               f"it has {', '.join(view.feature_names)}")
        if feature not in wanted.setdefault(view_name, []):
            wanted[view_name].append(feature)
            outputs.append((internal_name(view_name, feature), internal_name(view_name, feature)
                            if full_feature_names else feature))
    names = [name for _, name in outputs]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise OfflineError(f"feature names {', '.join(clashes)} come from more than one view; "
                           "pass full_feature_names to get view__feature columns")
    needed = {view: list(features) for view, features in wanted.items()}
    for name in wanted:
        if name in specs.on_demand_views:
            for source in specs.on_demand_views[name].source_views:
                if source not in views or source in specs.on_demand_views:
                    raise OfflineError(f"on demand feature view {name!r} reads {source!r}, "
                                       "which is not a batch or stream view")
                needed[source] = list(views[source].feature_names)  # the transform gets all of them
    return Plan(
        batch={v: tuple(f) for v, f in needed.items() if v in specs.batch_views},
        stream={v: tuple(f) for v, f in needed.items() if v in specs.stream_views},
        on_demand=tuple(v for v in wanted if v in specs.on_demand_views),
        outputs=tuple(outputs),
    )
