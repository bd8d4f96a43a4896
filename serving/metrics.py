"""Prometheus metrics of the serving API: latency per route, Redis round trips, errors.

Feast's SDK switches prometheus_client to multiprocess mode when it is imported (it sets
PROMETHEUS_MULTIPROC_DIR unless set already), so it is imported first here: our metrics
are then always multiprocess metrics, and /metrics aggregates every worker's samples
(`featurestream serve --workers N` points all workers at one directory).
"""

from __future__ import annotations

import os

import feast.metrics  # noqa: F401  (must run before our metrics exist; see above)
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest,
                               multiprocess, values)

_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

REQUEST_SECONDS = Histogram(
    "featurestream_serving_request_seconds", "Request latency by route", ["route"], buckets=_BUCKETS)
REQUEST_ERRORS = Counter(
    "featurestream_serving_errors_total", "Requests answered with an error status, by route and status",
    ["route", "status"])
REDIS_SECONDS = Histogram(
    "featurestream_serving_redis_seconds", "Round-trip time of one request's Redis pipeline", buckets=_BUCKETS)
REDIS_ERRORS = Counter("featurestream_serving_redis_errors_total", "Redis pipelines that failed or timed out")
ENTITIES = Histogram(
    "featurestream_serving_entities", "Entity rows per request", buckets=(1, 2, 5, 10, 50, 100, 500, 1000))


def render() -> tuple[bytes, str]:
    """The exposition text, aggregated over workers in multiprocess mode."""
    # Multiprocess only if our values really live in the shared files: when prometheus_client was
    # imported before Feast set the directory (a host process, a test run), they are in memory.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR") and values.ValueClass is not values.MutexValue:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
