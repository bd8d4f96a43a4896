"""Prometheus metrics of the serving API: latency per route, Redis round trips, errors.

Histograms are observed in memory and folded into prometheus_client's values every second
and before each scrape (`Tally`): in multiprocess mode an observe writes two mmap values,
each after asking the kernel for the pid, and the three a request makes cost about 6 µs,
4% of the CPU of a one-entity request.

Feast's SDK switches prometheus_client to multiprocess mode when it is imported (it sets
PROMETHEUS_MULTIPROC_DIR unless set already), so it is imported first here: our metrics
are then always multiprocess metrics, and /metrics aggregates every worker's samples
(`featurestream serve --workers N` points all workers at one directory).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from bisect import bisect_left

import feast.metrics  # noqa: F401  (must run before our metrics exist; see above)
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest,
                               multiprocess, values)

FOLD_EVERY_S = 1.0
log = logging.getLogger(__name__)


class Tally:
    """A histogram (or one labelled child of one) counted in this process and added to it in bulk by `fold`.

    Not thread-safe: a serving worker observes on its event loop only.
    """

    def __init__(self, histogram: Histogram) -> None:
        histogram._raise_if_not_observable()  # a labelled parent has no buckets of its own: say so now
        self._histogram = histogram
        self._bounds = histogram._upper_bounds  # ascending, +Inf last: `observe` picks the first bound >= amount
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        _TALLIES.append(self)

    def observe(self, amount: float) -> None:
        self._counts[bisect_left(self._bounds, amount)] += 1
        self._sum += amount

    def fold(self) -> None:
        counts, self._counts = self._counts, [0] * len(self._bounds)
        total, self._sum = self._sum, 0.0
        if not any(counts):
            return
        self._histogram._sum.inc(total)
        for bucket, count in zip(self._histogram._buckets, counts, strict=True):
            if count:
                bucket.inc(count)


_TALLIES: list[Tally] = []


def fold() -> None:
    """Add every tally's observations since the last fold to prometheus_client's values."""
    for tally in _TALLIES:
        tally.fold()


async def fold_forever() -> None:
    while True:
        await asyncio.sleep(FOLD_EVERY_S)
        try:
            fold()
        except Exception:  # a metrics file that cannot grow (a full disk) must not stop the next folds
            log.exception("folding the serving metrics failed; the last second's observations are lost")


_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

_REQUEST_SECONDS = Histogram(
    "featurestream_serving_request_seconds", "Request latency by route", ["route"], buckets=_BUCKETS)
REQUEST_ERRORS = Counter(
    "featurestream_serving_errors_total", "Requests answered with an error status, by route and status",
    ["route", "status"])
REDIS_SECONDS = Tally(Histogram(
    "featurestream_serving_redis_seconds", "Round-trip time of one request's Redis pipeline", buckets=_BUCKETS))
REDIS_ERRORS = Counter("featurestream_serving_redis_errors_total", "Redis pipelines that failed or timed out")
ENTITIES = Tally(Histogram(
    "featurestream_serving_entities", "Entity rows per request", buckets=(1, 2, 5, 10, 50, 100, 500, 1000)))


@functools.cache
def request_seconds(route: str) -> Tally:
    return Tally(_REQUEST_SECONDS.labels(route))


def render() -> tuple[bytes, str]:
    """The exposition text, aggregated over workers in multiprocess mode (other workers' last second may be missing)."""
    fold()
    # Multiprocess only if our values really live in the shared files: when prometheus_client was
    # imported before Feast set the directory (a host process, a test run), they are in memory.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR") and values.ValueClass is not values.MutexValue:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
