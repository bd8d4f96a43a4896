"""Streaming features from the `clicks` topic: sliding windows and sessions.

Engine settings Feast does not persist travel in `featurestream.*` tags.
"""

from datetime import timedelta
from typing import Any

from feast import Field, FileSource, KafkaSource
from feast.aggregation import Aggregation
from feast.data_format import JsonFormat, ParquetFormat
from feast.stream_feature_view import StreamFeatureView
from feast.types import Float64, Int64, UnixTimestamp

from entities import item, user
from repo_paths import EVENT_LOG_PATH

CLICK_SCHEMA = (
    "event_id string, user_id bigint, item_id bigint, event_type string, "
    "price double, event_timestamp timestamp"
)

event_log = FileSource(
    name="clicks_event_log",
    path=EVENT_LOG_PATH,
    file_format=ParquetFormat(),
    timestamp_field="event_timestamp",
    description="Offline copy of the clicks stream, written by the stream materializer.",
)

clicks = KafkaSource(
    name="clicks",
    kafka_bootstrap_servers="127.0.0.1:9092",
    topic="clicks",
    timestamp_field="event_timestamp",
    message_format=JsonFormat(schema_json=CLICK_SCHEMA),
    batch_source=event_log,
    watermark_delay_threshold=timedelta(minutes=1),
    description="Clickstream events: view, click, add_to_cart, purchase.",
)


def derive_click_columns(row: dict[str, Any]) -> dict[str, Any]:
    """Per-event derived columns; null where an event does not count (nulls are ignored)."""
    kind = row["event_type"]
    price = row.get("price")
    return {
        **row,
        "purchase_value": price if kind == "purchase" else None,
        "viewed_price": price if kind == "view" else None,
        "view_id": row["event_id"] if kind == "view" else None,
        "purchase_id": row["event_id"] if kind == "purchase" else None,
    }


MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

user_activity = StreamFeatureView(
    name="user_activity",
    entities=[user],
    source=clicks,
    timestamp_field="event_timestamp",
    mode="python",
    udf=derive_click_columns,
    ttl=DAY,
    aggregations=[
        Aggregation(column="event_id", function="count", time_window=5 * MINUTE, slide_interval=MINUTE, name="events_5m"),
        Aggregation(column="event_id", function="count", time_window=HOUR, slide_interval=MINUTE, name="events_1h"),
        Aggregation(column="event_id", function="count", time_window=DAY, slide_interval=HOUR, name="events_24h"),
        Aggregation(column="purchase_value", function="sum", time_window=HOUR, slide_interval=MINUTE, name="purchase_value_1h"),
        Aggregation(column="purchase_value", function="sum", time_window=DAY, slide_interval=HOUR, name="purchase_value_24h"),
        Aggregation(column="viewed_price", function="mean", time_window=HOUR, slide_interval=MINUTE, name="mean_viewed_price_1h"),
        Aggregation(column="price", function="max", time_window=DAY, slide_interval=HOUR, name="max_price_24h"),
        Aggregation(column="item_id", function="last", time_window=DAY, slide_interval=HOUR, name="last_item_id"),
    ],
    schema=[
        Field(name="user_id", dtype=Int64),
        Field(name="events_5m", dtype=Int64),
        Field(name="events_1h", dtype=Int64),
        Field(name="events_24h", dtype=Int64),
        Field(name="purchase_value_1h", dtype=Float64),
        Field(name="purchase_value_24h", dtype=Float64),
        Field(name="mean_viewed_price_1h", dtype=Float64),
        Field(name="max_price_24h", dtype=Float64),
        Field(name="last_item_id", dtype=Int64),
    ],
    online=True,
    description="What a user did in the last minutes, hour and day.",
)

item_activity = StreamFeatureView(
    name="item_activity",
    entities=[item],
    source=clicks,
    timestamp_field="event_timestamp",
    mode="python",
    udf=derive_click_columns,
    ttl=HOUR,
    aggregations=[
        Aggregation(column="view_id", function="count", time_window=5 * MINUTE, slide_interval=MINUTE, name="views_5m"),
        Aggregation(column="view_id", function="count", time_window=HOUR, slide_interval=5 * MINUTE, name="views_1h"),
        Aggregation(column="purchase_id", function="count", time_window=HOUR, slide_interval=5 * MINUTE, name="purchases_1h"),
    ],
    schema=[
        Field(name="item_id", dtype=Int64),
        Field(name="views_5m", dtype=Int64),
        Field(name="views_1h", dtype=Int64),
        Field(name="purchases_1h", dtype=Int64),
    ],
    online=True,
    description="How much attention an item gets right now.",
)

user_session = StreamFeatureView(
    name="user_session",
    entities=[user],
    source=clicks,
    timestamp_field="event_timestamp",
    mode="python",
    udf=derive_click_columns,
    ttl=timedelta(minutes=30),
    tags={"featurestream.session_gap": "30m"},
    aggregations=[
        Aggregation(column="purchase_value", function="sum", name="session_purchase_value"),
    ],
    schema=[
        Field(name="user_id", dtype=Int64),
        Field(name="session_start", dtype=UnixTimestamp),
        Field(name="session_event_count", dtype=Int64),
        Field(name="session_duration_s", dtype=Float64),
        Field(name="session_purchase_value", dtype=Float64),
    ],
    online=True,
    description="The user's current session (events at most 30 minutes apart).",
)
