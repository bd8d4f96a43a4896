"""Request-time features, computed by the serving API and the training export alike."""

from typing import Any

from feast import Field, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64

from stream_features import user_activity

candidate = RequestSource(
    name="candidate",
    schema=[Field(name="candidate_price", dtype=Float64)],
    description="The item being scored, as the caller sees it.",
)


@on_demand_feature_view(
    sources=[candidate, user_activity],
    schema=[
        Field(name="price_vs_mean_viewed", dtype=Float64),
        Field(name="price_vs_max_24h", dtype=Float64),
    ],
    mode="python",
)
def candidate_price_features(inputs: dict[str, Any]) -> dict[str, Any]:
    """The candidate's price relative to what the user has been looking at (null without history)."""

    def ratio(num: float | None, den: float | None) -> float | None:
        return None if num is None or not den else num / den

    return {
        "price_vs_mean_viewed": [
            ratio(p, m) for p, m in zip(inputs["candidate_price"], inputs["mean_viewed_price_1h"])
        ],
        "price_vs_max_24h": [
            ratio(p, m) for p, m in zip(inputs["candidate_price"], inputs["max_price_24h"])
        ],
    }
