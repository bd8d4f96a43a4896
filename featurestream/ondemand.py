"""Request-time features: one function that the serving API and the training export both call.

Keeping the call in one place is what makes request-time features agree online
and offline: same inputs (request fields plus the source views' features, by
short feature name), same transformation, same checks on what it returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from featurestream.definitions import OnDemandViewSpec


class OnDemandError(ValueError):
    """The transformation failed or returned something other than its declared features."""


def missing_inputs(spec: OnDemandViewSpec, inputs: Mapping[str, Any]) -> list[str]:
    """The request fields the caller did not pass (the caller turns this into a 422)."""
    return [name for name in spec.request_fields if name not in inputs]


def run_on_demand(spec: OnDemandViewSpec, inputs: Mapping[str, Sequence[Any]], rows: int) -> dict[str, list[Any]]:
    """Apply a python-mode on-demand view to `rows` rows given as columns; returns its declared features."""
    try:
        produced = spec.transform(dict(inputs))
    except Exception as exc:  # the user's code: report it with the view's name, whatever it raised
        raise OnDemandError(f"on demand feature view {spec.name!r} failed: {type(exc).__name__}: {exc}") from exc
    out: dict[str, list[Any]] = {}
    for name in spec.feature_names:
        if name not in produced:
            raise OnDemandError(f"on demand feature view {spec.name!r} did not return {name!r}")
        column = list(produced[name])
        if len(column) != rows:
            raise OnDemandError(
                f"on demand feature view {spec.name!r} returned {len(column)} values of {name!r} for {rows} rows"
            )
        out[name] = column
    return out
