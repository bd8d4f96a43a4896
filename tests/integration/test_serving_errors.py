"""Every error of the serving API names its cause; Redis down is a bounded 503 and the server recovers; a fuzz
run of the OpenAPI schema finds no 5xx."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from serving.app import create_app
from serving.config import load_serve_config
from tests.integration.test_serving_api import World, world  # noqa: F401  (the shared session fixture)
from tests.ports import free_port
from tests.private_redis import start_redis

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::DeprecationWarning")
ONE_USER = {"user_id": [1]}


@pytest.fixture(scope="module")
def strict_api(world: World) -> Iterator[TestClient]:  # noqa: F811
    """The API with authentication on and a small entity limit."""
    env = {**os.environ, **world.env, "FEATURESTREAM_SERVE_API_KEYS": "k1,k2", "FEATURESTREAM_SERVE_MAX_ENTITIES": "5"}
    with TestClient(create_app(load_serve_config(env)), headers={"X-API-Key": "k1"}) as client:
        yield client


def post(api: TestClient, body: object, route: str = "/get-online-features") -> tuple[int, str]:
    response = api.post(route, json=body)
    return response.status_code, response.json()["detail"]


@pytest.mark.parametrize(("body", "status", "names"), [
    ({"features": ["user_profile:nope"], "entities": ONE_USER}, 404, "'nope'"),
    ({"features": ["nope_view:x"], "entities": ONE_USER}, 404, "'nope_view'"),
    ({"feature_service": "nope_service", "entities": ONE_USER}, 404, "'nope_service'"),
    ({"features": ["user_profile"], "entities": ONE_USER}, 422, "features[0]"),
    ({"features": ["user_profile:country"], "entities": {"item_id": [1]}}, 422, "entities.user_id"),
    ({"features": ["user_profile:country"], "entities": {"user_id": ["one"]}}, 422, "entities.user_id[0]"),
    ({"features": ["user_profile:country"], "entities": {"user_id": 1}}, 422, "entities.user_id"),
    ({"features": ["user_profile:country"], "entities": {"user_id": [1, 2], "item_id": [1]}}, 422, "entities.item_id"),
    ({"features": ["user_profile:country"]}, 422, "entities"),
    ({"features": "user_profile:country", "entities": ONE_USER}, 422, "$.features"),
    ({"entities": ONE_USER}, 422, "feature_service"),
    ({"features": ["user_profile:country"], "feature_service": "purchase_model_v1", "entities": ONE_USER}, 422,
     "feature_service"),
    ({"features": ["candidate_price_features:price_vs_max_24h"], "entities": ONE_USER}, 422,
     "request_data.candidate_price"),
    ({"features": ["user_profile:country"], "entities": ONE_USER, "request_time": "yesterday"}, 422, "request_time"),
    ({"features": ["user_profile:country"], "entities": {"user_id": list(range(6))}}, 413, "limit of 5"),
    ({"feature_service": "nope_service", "entities": ONE_USER}, 404, "'nope_service'"),
])
def test_errors_name_their_cause(strict_api: TestClient, body: dict, status: int, names: str) -> None:
    got_status, detail = post(strict_api, body)
    assert got_status == status, detail
    assert names in detail


def test_malformed_json_is_422(strict_api: TestClient) -> None:
    response = strict_api.post("/get-online-features", content=b'{"features": [', headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "not valid JSON" in response.json()["detail"]


def test_predict_errors(strict_api: TestClient) -> None:
    assert post(strict_api, {"feature_service": "nope", "entities": ONE_USER}, "/predict")[0] == 404
    status, detail = post(strict_api, {"feature_service": "purchase_model_v1", "entities": ONE_USER}, "/predict")
    assert (status, "no model configured" in detail) == (422, True)
    assert "`feature_service`" in post(strict_api, {"entities": ONE_USER}, "/predict")[1]


def test_api_keys(strict_api: TestClient) -> None:
    body = {"features": ["user_profile:country"], "entities": ONE_USER}
    assert strict_api.post("/get-online-features", json=body, headers={"X-API-Key": "wrong"}).status_code == 401
    assert strict_api.post("/get-online-features", json=body, headers={"X-API-Key": "",
                                                                     "Authorization": "Bearer k2"}).status_code == 200
    assert strict_api.get("/health").status_code == 200  # liveness probes need no key



def test_redis_down_is_503_and_the_server_recovers(world: World, tmp_path: Path) -> None:  # noqa: F811
    """A private redis-server (the shared one is never stopped) goes away and comes back on the same port."""
    port = free_port()
    server = start_redis(port, tmp_path)
    env = {**os.environ, **world.env, "FEATURESTREAM_REDIS_URL": f"redis://127.0.0.1:{port}/0",
           "FEATURESTREAM_SERVE_REDIS_TIMEOUT_S": "0.3"}
    body = {"features": ["user_profile:country", "user_activity:events_1h"], "entities": {"user_id": [1, 2]}}
    try:
        with TestClient(create_app(load_serve_config(env))) as api:
            assert api.post("/get-online-features", json=body).status_code == 200
            server.kill()
            server.wait()
            for _ in range(3):
                response = api.post("/get-online-features", json=body)
                assert response.status_code == 503
                assert "Redis is unavailable" in response.json()["detail"]
            assert api.get("/health/ready").status_code == 503
            assert api.get("/health").json()["redis"] == "down"
            server = start_redis(port, tmp_path)
            assert api.post("/get-online-features", json=body).status_code == 200
            assert api.get("/health/ready").status_code == 200
    finally:
        server.kill()
        server.wait()


def test_fuzz_of_the_openapi_schema_never_gives_5xx(world: World) -> None:  # noqa: F811
    """Schemathesis generates bodies from the schema (valid and not); driven here, as its pytest plugin is not
    compatible with this pytest."""
    app = create_app(load_serve_config({**os.environ, **world.env}))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/get-online-features", "/predict", "/health", "/metrics"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def never_5xx(case: schemathesis.Case) -> None:
            response = case.call()
            assert response.status_code < 500, f"{case.method} {case.path} {case.body!r}: {response.text}"

        never_5xx()
