"""The serving API against real Redis: batch rows written by Feast, stream state written by the real materializer
from a real Kafka topic, every view kind checked against the brute-force reference at chosen request times."""

from __future__ import annotations

import os
import random
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import redis
from fastapi.testclient import TestClient

from featurestream.config import Settings
from featurestream.definitions import RepoSpecs, load_repo
from serving.app import create_app
from serving.config import load_serve_config
from serving.feast_layout import format_ms
from tests.conftest import FEATURE_REPO, run_cli
from tests.reference import agrees
from tests.streams import create_topic, encode, expected_features, produce, random_stream, reference_events

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::DeprecationWarning")
DB = 9  # a private Redis database; only this run's keys (named by its project) are removed afterwards
MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000
USERS = range(1, 13)  # all have events; batch rows: 1-10 fresh, 11 stale (older than the 2 day ttl), 12 none
ITEMS = range(1, 7)


@dataclass
class World:
    repo: Path
    env: dict[str, str]
    specs: RepoSpecs
    project: str
    redis_url: str
    accepted: list[dict[str, Any]]
    newest_ms: int  # the newest accepted event
    batch_ms: int  # event time of the fresh batch rows
    stale_ms: int


def _ms(stamp: datetime) -> int:
    return int(stamp.timestamp() * 1000)


def private_repo(root: Path, settings: Settings, topic: str) -> tuple[Path, str]:
    """A copy of the demo repo under a unique project, on Redis db DB, reading `topic`."""
    repo = root / "feature_repo"
    shutil.copytree(FEATURE_REPO, repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    project = f"srv{uuid.uuid4().hex[:8]}"
    endpoint = settings.redis_endpoint
    config = repo / "feature_store.yaml"
    text = re.sub(r"^project: .*$", f"project: {project}", config.read_text(), flags=re.M)
    text = re.sub(r"connection_string: .*", f'connection_string: "{endpoint},db={DB}"', text)
    config.write_text(text)
    source = repo / "stream_features.py"
    source.write_text(source.read_text().replace('topic="clicks"', f'topic="{topic}"'))
    (repo / "loyalty_features.py").write_text(LOYALTY_VIEW)
    return repo, project


LOYALTY_VIEW = '''"""A second batch view of users, held by Feast in the same Redis hash as user_profile."""

from datetime import timedelta

from feast import FeatureView, Field, FileSource
from feast.types import Float64, Int64

from entities import user

user_loyalty = FeatureView(
    name="user_loyalty", entities=[user], ttl=timedelta(days=2), online=True,
    schema=[Field(name="user_id", dtype=Int64), Field(name="points", dtype=Float64)],
    source=FileSource(name="user_loyalty_source", path="data/user_loyalty.parquet", timestamp_field="snapshot_ts"),
)
'''
LOYAL_USERS = [1, 11, 12]  # user 3 has a profile and no loyalty row, 11 a stale profile, 12 no profile


def write_batch_rows(repo: Path, fresh: datetime, stale: datetime) -> None:
    """Batch rows through Feast's own online write path (the layout `feast materialize` produces)."""
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo))
    users = [u for u in USERS if u != 12]
    store.write_to_online_store("user_profile", pd.DataFrame({
        "user_id": users,
        "account_age_days": [10 * u for u in users],
        "country": [None if u == 3 else f"C{u}" for u in users],
        "lifetime_orders": [u for u in users],
        "lifetime_spend": [u * 1.5 for u in users],
        "snapshot_ts": [stale if u == 11 else fresh for u in users],
        "created_ts": [fresh for _ in users],
    }))
    store.write_to_online_store("user_loyalty", pd.DataFrame({
        "user_id": LOYAL_USERS, "points": [u * 10.0 for u in LOYAL_USERS], "snapshot_ts": [fresh for _ in LOYAL_USERS],
    }))
    store.write_to_online_store("item_stats", pd.DataFrame({
        "item_id": list(ITEMS),
        "price": [i * 10.0 for i in ITEMS],
        "category": [f"cat{i % 2}" for i in ITEMS],
        "popularity_7d": [i * 100 for i in ITEMS],
        "snapshot_ts": [fresh for _ in ITEMS],
        "created_ts": [fresh for _ in ITEMS],
    }))


def run_stream(world_specs: RepoSpecs, project: str, client: redis.Redis, bootstrap: str, topic: str,
               start_ms: int) -> list[dict[str, Any]]:
    """Events through Kafka and the real stream materializer; returns the accepted ones as the reference sees them."""
    from materializers.stream.runner import StreamMaterializer, StreamOptions

    views = list(world_specs.stream_views.values())
    lateness = views[0].source.lateness_ms
    create_topic(bootstrap, topic, 2)
    events = random_stream(random.Random(7), 500, users=len(USERS), items=len(ITEMS), start_ms=start_ms,
                           span_ms=2 * HOUR, lateness_ms=lateness)
    placements = produce(bootstrap, topic, encode(events), [str(e["user_id"]).encode() for e in events])
    StreamMaterializer(project, views, client, StreamOptions(
        group=f"g-{topic}", kafka_config={"bootstrap.servers": bootstrap}, idle_exit_s=2.0, event_log=False)).run()
    accepted, _ = reference_events(events, placements, lateness)
    return accepted


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory, settings: Settings, redis_client: redis.Redis,
          kafka_bootstrap: str) -> Iterator[World]:
    topic = f"srv-{uuid.uuid4().hex[:10]}"
    repo, project = private_repo(tmp_path_factory.mktemp("serving"), settings, topic)
    env = {"FEATURESTREAM_REPO": str(repo)}
    applied = run_cli("apply", env=env)
    assert applied.returncode == 0, applied.stderr
    specs = load_repo(repo)
    url = f"redis://{settings.redis_endpoint}/{DB}"
    client = redis.Redis.from_url(url)
    now = datetime.now(UTC).replace(microsecond=123_000)
    fresh, stale = now - timedelta(hours=1), now - timedelta(days=3)
    try:
        write_batch_rows(repo, fresh, stale)
        accepted = run_stream(specs, project, client, kafka_bootstrap, topic, _ms(now) - 3 * HOUR)
        yield World(repo, env, specs, project, url, accepted, max(e["ts"] for e in accepted), _ms(fresh), _ms(stale))
    finally:
        for pattern in (f"fs:{project}:*", f"*{project}"):
            keys = list(client.scan_iter(match=pattern, count=1000))
            if keys:
                client.delete(*keys)


@pytest.fixture(scope="session")
def api(world: World) -> Iterator[TestClient]:
    with TestClient(create_app(load_serve_config({**os.environ, **world.env}))) as client:
        yield client


def online(api: TestClient, **body: Any) -> dict[str, Any]:
    response = api.post("/get-online-features", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def by_name(response: dict[str, Any]) -> dict[str, dict[str, list[Any]]]:
    return dict(zip(response["metadata"]["feature_names"], response["results"]))


def test_batch_values_statuses_and_timestamps(api: TestClient, world: World) -> None:
    response = online(api, features=["user_profile:country", "user_profile:lifetime_spend", "item_stats:price"],
                      entities={"user_id": [1, 3, 11, 12], "item_id": [2, 2, 5, 99]})
    assert response["metadata"]["feature_names"] == ["user_id", "item_id", "country", "lifetime_spend", "price"]
    got = by_name(response)
    assert got["user_id"] == {"values": [1, 3, 11, 12], "statuses": ["PRESENT"] * 4,
                              "event_timestamps": ["1970-01-01T00:00:00Z"] * 4}
    fresh = format_ms(world.batch_ms)
    assert got["country"] == {"values": ["C1", None, None, None],
                              "statuses": ["PRESENT", "PRESENT", "OUTSIDE_MAX_AGE", "NOT_FOUND"],
                              "event_timestamps": [fresh, fresh, format_ms(world.stale_ms), "1970-01-01T00:00:00Z"]}
    assert got["lifetime_spend"]["values"] == [1.5, 4.5, None, None]
    assert got["price"]["values"] == [20.0, 20.0, 50.0, None]
    assert got["price"]["statuses"] == ["PRESENT", "PRESENT", "PRESENT", "NOT_FOUND"]


def test_batch_views_read_in_one_hash_keep_their_own_statuses(api: TestClient) -> None:
    """One HMGET answers both user views; an entity may have either, both or neither, fresh or stale."""
    got = by_name(online(api, features=["user_loyalty:points", "user_profile:lifetime_spend"],
                         entities={"user_id": [1, 3, 11, 12, 4040]}))
    assert got["points"]["values"] == [10.0, None, 110.0, 120.0, None]
    assert got["points"]["statuses"] == ["PRESENT", "NOT_FOUND", "PRESENT", "PRESENT", "NOT_FOUND"]
    assert got["lifetime_spend"]["values"] == [1.5, 4.5, None, None, None]
    assert got["lifetime_spend"]["statuses"] == ["PRESENT", "PRESENT", "OUTSIDE_MAX_AGE", "NOT_FOUND", "NOT_FOUND"]


def test_batch_ttl_edges(api: TestClient, world: World) -> None:
    """A row is visible at t when t - ttl <= row_ts <= t, as in Feast's historical retrieval and the export."""
    ttl = world.specs.batch_views["user_profile"].ttl_ms
    assert ttl == 2 * DAY
    statuses = {}
    for label, t in {"before": world.batch_ms - 1, "at": world.batch_ms, "last": world.batch_ms + ttl,
                     "expired": world.batch_ms + ttl + 1}.items():
        got = by_name(online(api, features=["user_profile:account_age_days"], entities={"user_id": [2]},
                             request_time=t))["account_age_days"]
        statuses[label] = (got["statuses"][0], got["values"][0])
    assert statuses == {"before": ("NOT_FOUND", None), "at": ("PRESENT", 20), "last": ("PRESENT", 20),
                        "expired": ("OUTSIDE_MAX_AGE", None)}


def _stream_refs(world: World, view: str) -> list[str]:
    return [f"{view}:{name}" for name in world.specs.stream_views[view].feature_names]


@pytest.mark.parametrize("offset_ms", [0, 59_999, 20 * MINUTE, 31 * MINUTE, 2 * HOUR, 23 * HOUR, 26 * HOUR])
def test_windowed_and_session_features_equal_the_reference(api: TestClient, world: World, offset_ms: int) -> None:
    t = world.newest_ms + offset_ms
    refs = _stream_refs(world, "user_activity") + _stream_refs(world, "user_session")
    users = [*USERS, 999]
    got = by_name(online(api, features=refs, entities={"user_id": users}, request_time=t))
    problems = []
    for view_name in ("user_activity", "user_session"):
        view = world.specs.stream_views[view_name]
        functions = {a.name: a.function for a in view.aggregations}
        for row, user in enumerate(users):
            want = expected_features(view, world.accepted, (user,), t)
            mine = [e["ts"] for e in world.accepted if e["user_id"] == user and e["ts"] <= t]
            for name, value in want.items():
                result = got[name]
                if not agrees(functions.get(name, "count"), result["values"][row], value, magnitude=1000.0):
                    problems.append(f"{name} user {user} at +{offset_ms}: {result['values'][row]!r} != {value!r}")
                status, stamp = result["statuses"][row], result["event_timestamps"][row]
                if not mine:
                    expected_status, expected_stamp = "NOT_FOUND", "1970-01-01T00:00:00Z"
                elif view.is_session:
                    active = want["session_event_count"] > 0
                    expected_status, expected_stamp = ("PRESENT" if active else "OUTSIDE_MAX_AGE"), format_ms(max(mine))
                else:
                    fresh = max(mine) - max(mine) % HOUR + HOUR > t - (view.ttl_ms or 0)
                    expected_status, expected_stamp = ("PRESENT" if fresh else "OUTSIDE_MAX_AGE"), format_ms(t)
                if (status, stamp) != (expected_status, expected_stamp):
                    problems.append(f"{name} user {user} at +{offset_ms}: {status} {stamp} != "
                                    f"{expected_status} {expected_stamp}")
    assert problems == []


def test_unknown_entity_gets_empty_window_values(api: TestClient) -> None:
    got = by_name(online(api, features=["item_activity:views_5m", "user_activity:mean_viewed_price_1h",
                                        "user_session:session_event_count", "user_session:session_start"],
                         entities={"item_id": [12345], "user_id": [12345]}))
    assert [got[n]["values"][0] for n in ("views_5m", "mean_viewed_price_1h", "session_event_count",
                                          "session_start")] == [0, None, 0, None]
    assert {got[n]["statuses"][0] for n in got if n not in ("item_id", "user_id")} == {"NOT_FOUND"}


def test_empty_windows_of_a_known_entity(api: TestClient, world: World) -> None:
    """Past the 5 minute window but inside the 24 hour one: count 0 for 5 min, the day's values for 24 h."""
    t = world.newest_ms + 30 * MINUTE
    user = world.accepted[-1]["user_id"]
    got = by_name(online(api, features=["user_activity:events_5m", "user_activity:events_24h"],
                         entities={"user_id": [user]}, request_time=t))
    assert got["events_5m"]["values"] == [0]
    assert got["events_24h"]["values"][0] == len([e for e in world.accepted if e["user_id"] == user])
    assert got["events_5m"]["statuses"] == ["PRESENT"]


def test_on_demand_features_from_request_data(api: TestClient, world: World) -> None:
    t = world.newest_ms
    users, prices = [1, 2, 999], [12.5, 99.0, 5.0]
    got = by_name(online(api, features=["candidate_price_features:price_vs_max_24h",
                                        "candidate_price_features:price_vs_mean_viewed"],
                         entities={"user_id": users, "candidate_price": prices}, request_time=t))
    assert list(got) == ["user_id", "price_vs_mean_viewed", "price_vs_max_24h"]
    view = world.specs.stream_views["user_activity"]
    for row, (user, price) in enumerate(zip(users, prices)):
        want = expected_features(view, world.accepted, (user,), t)
        mean, top = want["mean_viewed_price_1h"], want["max_price_24h"]
        assert got["price_vs_max_24h"]["values"][row] == (None if top is None else pytest.approx(price / top))
        assert got["price_vs_mean_viewed"]["values"][row] == (None if not mean else pytest.approx(price / mean))
    assert got["price_vs_max_24h"]["statuses"] == ["PRESENT"] * 3


def test_feature_service_with_full_names_reads_redis_once(api: TestClient, world: World) -> None:
    before = _redis_round_trips(api)
    response = online(api, feature_service="purchase_model_v1", full_feature_names=True,
                      entities={"user_id": list(USERS), "item_id": [1 + u % 6 for u in USERS]},
                      request_data={"candidate_price": [float(u) for u in USERS]})
    assert _redis_round_trips(api) == before + 1
    names = response["metadata"]["feature_names"]
    assert names[:2] == ["user_id", "item_id"]
    assert names[2:] == [ref.replace(":", "__") for ref in world.specs.feature_services["purchase_model_v1"].features]
    assert all(len(r["values"]) == len(USERS) for r in response["results"])


def test_repeated_entities_are_read_once_and_answered_per_row(api: TestClient) -> None:
    got = by_name(online(api, features=["user_profile:account_age_days", "item_stats:popularity_7d"],
                         entities={"user_id": [4, 4, 4], "item_id": [1, 2, 1]}))
    assert got["account_age_days"]["values"] == [40, 40, 40]
    assert got["popularity_7d"]["values"] == [100, 200, 100]


def _redis_round_trips(api: TestClient) -> float:
    text = api.get("/metrics").text
    match = re.search(r"^featurestream_serving_redis_seconds_count (\S+)$", text, flags=re.M)
    assert match, text
    return float(match.group(1))


def test_health_and_metrics(api: TestClient) -> None:
    assert api.get("/health").json()["redis"] == "up"
    assert api.get("/health/ready").status_code == 200
    api.post("/get-online-features", json={"features": ["nope:x"], "entities": {"user_id": [1]}})
    text = api.get("/metrics").text
    assert 'featurestream_serving_request_seconds_bucket{le="0.001",route="/get-online-features"}' in text
    assert 'featurestream_serving_errors_total{route="/get-online-features",status="404"}' in text
