"""Tallied histograms must expose exactly what observing prometheus_client's histogram directly would."""

from __future__ import annotations

import math
import random

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from serving import metrics

BUCKETS = (0.001, 0.01, 0.1, 1.0)


def _exposition(registry: CollectorRegistry) -> list[str]:
    """The sample lines, less the creation times (they differ between two histograms) and the sums (added in
    another order, they may differ in the last bits; compared with a tolerance instead)."""
    return [line for line in generate_latest(registry).decode().splitlines()
            if "_created" not in line and "_sum" not in line]


def _pair(labels: bool) -> tuple[CollectorRegistry, Histogram, CollectorRegistry, Histogram]:
    """Two histograms alike but for the registry they live in."""
    names = ["route"] if labels else []
    direct_registry, tallied_registry = CollectorRegistry(), CollectorRegistry()
    direct = Histogram("h", "help", names, buckets=BUCKETS, registry=direct_registry)
    tallied = Histogram("h", "help", names, buckets=BUCKETS, registry=tallied_registry)
    return direct_registry, direct, tallied_registry, tallied


def test_folded_tally_equals_direct_observations() -> None:
    direct_registry, direct, tallied_registry, tallied = _pair(labels=True)
    tally = metrics.Tally(tallied.labels("/x"))
    rng = random.Random(7)
    # bucket bounds exactly (`le` is inclusive), between them, beyond the last, zero
    amounts = [*BUCKETS, 0.0, 5.0, *(rng.uniform(0, 2) for _ in range(500)), *(rng.choice(BUCKETS) for _ in range(50))]
    for amount in amounts:
        direct.labels("/x").observe(amount)
        tally.observe(amount)
    assert _exposition(tallied_registry) != _exposition(direct_registry)  # nothing shows before a fold
    tally.fold()
    assert _exposition(tallied_registry) == _exposition(direct_registry)
    tally.fold()  # a second fold adds nothing
    assert _exposition(tallied_registry) == _exposition(direct_registry)
    assert math.isclose(tallied.labels("/x")._sum.get(), direct.labels("/x")._sum.get())


def test_module_fold_covers_every_tally_and_keeps_counting() -> None:
    direct_registry, direct, tallied_registry, tallied = _pair(labels=False)
    tally = metrics.Tally(tallied)
    for round_ in range(3):
        for amount in (0.0005 * round_, 0.05, 3.0):
            direct.observe(amount)
            tally.observe(amount)
        metrics.fold()
        assert _exposition(tallied_registry) == _exposition(direct_registry)
    assert any(line.startswith("h_count 9.0") for line in _exposition(tallied_registry))
    assert math.isclose(tallied._sum.get(), direct._sum.get())


def test_request_seconds_has_one_tally_per_route() -> None:
    assert metrics.request_seconds("/a") is metrics.request_seconds("/a")
    assert metrics.request_seconds("/a") is not metrics.request_seconds("/b")
