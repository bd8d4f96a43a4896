"""Online/offline parity, end to end: events through Kafka and the stream materializer into Redis, then the
serving API at `request_time` t against the training export at t, for the same entity rows.

Online state answers exactly at times after an entity's last event, and at tile ends for windowed
features (a tile holds its whole slide); those are the times compared. Batch views are left out:
Redis holds only their newest row, while the export is point in time by design.
"""

from __future__ import annotations

import math
import os
import random
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import redis
from fastapi.testclient import TestClient

from featurestream.definitions import StreamViewSpec, load_repo
from featurestream.online.series import series_retention_ms
from featurestream.offline.export import export
from serving.app import create_app
from serving.config import load_serve_config
from tests.streams import (HOUR, assert_exits_cleanly, create_topic, produce_keyed, random_events, reference_events,
                           run_materializer)

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::DeprecationWarning")
MINUTE = 60_000
AFTER_LAST_EVENT = (0, 1, MINUTE - 1, 5 * MINUTE, 10 * MINUTE, 29 * MINUTE, 31 * MINUTE, 65 * MINUTE)


def _exact_windows(views: list[StreamViewSpec], t: int, newest: int) -> list[str]:
    """Windowed features online answers exactly at t: t ends a tile, and no tile the window needs is pruned yet
    (tiles go once they start `retention + slide` before a key's newest event, which is at most `newest`)."""
    refs = []
    for view in views:
        retention = series_retention_ms(view)
        for agg in view.aggregations:
            if agg.slide_ms is None or agg.window_ms is None or (t + 1) % agg.slide_ms:
                continue
            first_tile = t - t % agg.slide_ms - agg.window_ms + agg.slide_ms
            if first_tile > newest - retention[f"{agg.column}|{agg.slide_ms}"] - agg.slide_ms:
                refs.append(f"{view.name}:{agg.name}")
    return refs


def _same(online: Any, offline: Any) -> bool:
    if isinstance(offline, datetime):
        offline = int(offline.timestamp() * 1000)
    if online is None or offline is None:
        return online is None and offline is None
    if isinstance(online, (int, float)) and isinstance(offline, (int, float)):
        return math.isclose(online, offline, rel_tol=1e-9, abs_tol=1e-9)
    return bool(online == offline)


def test_serving_at_request_time_equals_the_export(stream_repo: tuple[Path, dict[str, str]],
                                                    redis_client: redis.Redis, kafka_bootstrap: str,
                                                    topic_name: str) -> None:
    repo, env = stream_repo
    specs = load_repo(repo)
    views = list(specs.stream_views.values())
    create_topic(kafka_bootstrap, topic_name, 3)
    events = random_events(views, 6_000, seed=51)
    placements = produce_keyed(kafka_bootstrap, topic_name, events)
    assert_exits_cleanly(run_materializer(env, "--idle-exit", "3"))
    accepted, _ = reference_events(events, placements, views[0].source.lateness_ms)
    oldest, newest = min(e["ts"] for e in accepted), max(e["ts"] for e in accepted)

    rng = random.Random(52)
    pairs = rng.sample(sorted({(e["user_id"], e["item_id"]) for e in accepted}), 80) + [(10_001, 10_002)]
    entities = {"user_id": [u for u, _ in pairs], "item_id": [i for _, i in pairs],
                "candidate_price": [round(rng.uniform(1, 300), 2) for _ in pairs]}
    everything = [f"{v.name}:{f}" for v in [*views, *specs.on_demand_views.values()] for f in v.feature_names]
    cases = [(newest + d, everything) for d in AFTER_LAST_EVENT]
    # Earlier times: the windows that end a tile there and whose tiles are all still retained.
    tile_ends = [k * MINUTE - 1 for k in sorted(rng.sample(range(oldest // MINUTE + 1, newest // MINUTE), 12))]
    tile_ends += [k * HOUR - 1 for k in range(oldest // HOUR + 1, newest // HOUR + 1)]
    cases += [(t, refs) for t in tile_ends if (refs := _exact_windows(views, t, newest))]

    problems: list[str] = []
    compared = 0
    with TestClient(create_app(load_serve_config({**os.environ, **env}))) as api:
        for t, refs in cases:
            response = api.post("/get-online-features", json={"features": refs, "entities": entities,
                                                               "request_time": t})
            assert response.status_code == 200, response.text
            body = response.json()
            rows = pa.table({**{k: v for k, v in entities.items()},
                             "event_timestamp": pa.array([t] * len(pairs), pa.timestamp("ms", tz="UTC"))})
            offline = export(repo, rows, features=refs)
            for name, result in zip(body["metadata"]["feature_names"], body["results"], strict=True):
                if name in entities:
                    continue
                for row, (got, want) in enumerate(zip(result["values"], offline[name].to_pylist(), strict=True)):
                    compared += 1
                    if not _same(got, want):
                        problems.append(f"t={t} {pairs[row]} {name}: serving {got!r} != export {want!r}")
    assert compared > 5_000
    assert problems == [], f"{len(problems)} of {compared} values differ:\n" + "\n".join(problems[:30])
