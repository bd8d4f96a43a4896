"""What the models consume."""

from feast import FeatureService

from batch_features import item_stats, user_profile
from on_demand_features import candidate_price_features
from stream_features import item_activity, user_activity, user_session

purchase_model_v1 = FeatureService(
    name="purchase_model_v1",
    features=[
        user_profile,
        item_stats,
        user_activity,
        item_activity,
        user_session,
        candidate_price_features,
    ],
    description="Will this user buy in the next 10 minutes?",
)
