"""Batch features: daily Parquet snapshots, offline truth in DuckDB, newest row per entity in Redis."""

from datetime import timedelta

from feast import FeatureView, Field, FileSource
from feast.types import Float64, Int64, String

from entities import item, user
from repo_paths import ITEM_STATS_PATH, USER_PROFILE_PATH

user_profile_source = FileSource(
    name="user_profile_source",
    path=USER_PROFILE_PATH,
    timestamp_field="snapshot_ts",
    created_timestamp_column="created_ts",
)

item_stats_source = FileSource(
    name="item_stats_source",
    path=ITEM_STATS_PATH,
    timestamp_field="snapshot_ts",
    created_timestamp_column="created_ts",
)

user_profile = FeatureView(
    name="user_profile",
    entities=[user],
    ttl=timedelta(days=2),
    schema=[
        Field(name="user_id", dtype=Int64),
        Field(name="account_age_days", dtype=Int64),
        Field(name="country", dtype=String),
        Field(name="lifetime_orders", dtype=Int64),
        Field(name="lifetime_spend", dtype=Float64),
    ],
    source=user_profile_source,
    online=True,
    description="Daily snapshot of a user's account.",
)

item_stats = FeatureView(
    name="item_stats",
    entities=[item],
    ttl=timedelta(days=2),
    schema=[
        Field(name="item_id", dtype=Int64),
        Field(name="price", dtype=Float64),
        Field(name="category", dtype=String),
        Field(name="popularity_7d", dtype=Int64),
    ],
    source=item_stats_source,
    online=True,
    description="Daily snapshot of an item's catalogue data and 7-day popularity.",
)
