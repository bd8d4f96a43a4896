"""Prometheus metrics of the stream materializer."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter("featurestream_stream_events_total", "Events applied to Redis and the event log.", ["topic"])
DEAD_LETTERS = Counter("featurestream_stream_dlq_total", "Records sent to the dead-letter topic.", ["topic", "reason"])
BATCH_SECONDS = Histogram(
    "featurestream_stream_batch_seconds", "Time to apply one micro-batch to Redis.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
BATCH_EVENTS = Histogram("featurestream_stream_batch_events", "Records per micro-batch.",
                         buckets=(1, 10, 100, 1_000, 5_000, 10_000, 50_000, 100_000))
EVENTS_PER_SECOND = Gauge("featurestream_stream_events_per_second", "Records handled per second, last interval.")
LAG = Gauge("featurestream_stream_consumer_lag", "Messages behind the partition's end.", ["topic", "partition"])
FRESHNESS = Gauge("featurestream_stream_freshness_seconds",
                  "Now minus the event time of the newest applied event.", ["topic"])
REDIS_RETRIES = Counter("featurestream_stream_redis_retries_total", "Redis writes retried after an error.")
CONSUMER_RESTARTS = Counter("featurestream_stream_consumer_restarts_total",
                            "Kafka consumers recreated after staying out of their group too long.")
