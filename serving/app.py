"""The FastAPI app: routes, authentication, error mapping, metrics, and the registry kept fresh in the background.

Bodies are decoded with msgspec and responses encoded with orjson, outside FastAPI's
pydantic path: that path costs more than the whole Redis round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import orjson
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from starlette.datastructures import Headers
from starlette.types import Scope

from featurestream.definitions import load_repo
from serving import metrics
from serving.catalog import Catalog
from serving.config import ServeConfig
from serving.errors import Invalid, ServingError, Unauthorized
from serving.feast_layout import now_ms
from serving.models import Model, load_model
from serving.redis_io import RedisReader
from serving.requests import (
    OnlineFeaturesRequest,
    PredictRequest,
    check_keys,
    check_request_fields,
    columns,
    decode,
    request_time_ms,
)
from serving.retrieval import Retriever, Vectors

log = logging.getLogger("featurestream.serving")
_JSON = "application/json"
_YOUNG_COLLECTION_EVERY = 20_000  # allocations between young-generation GC passes (CPython's default: 700)


class ServingState:
    """What the routes share: the current registry snapshot, the Redis reader, the models."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.catalog = Catalog(load_repo(config.settings.repo_path))
        self.loaded_at = time.monotonic()
        self.redis = RedisReader(config.settings.redis_url, config.redis_timeout_s)
        self.retriever = Retriever(self.redis)
        base = config.settings.repo_path
        self.models: dict[str, Model] = {}
        for service, reference in config.models.items():
            self.catalog.service_features(service)  # a model for an unknown service is a configuration error
            self.models[service] = load_model(service, reference, base)

    async def refresh_forever(self) -> None:
        """Re-read the registry every few seconds off the event loop; a failed read keeps the last good one."""
        while True:
            await asyncio.sleep(self.config.registry_refresh_s)
            try:
                specs = await asyncio.to_thread(load_repo, self.config.settings.repo_path)
            except Exception as exc:  # a broken registry must not take serving down
                log.warning("registry refresh failed, serving the previous one: %s", exc)
                continue
            self.catalog = Catalog(specs)
            self.loaded_at = time.monotonic()

    def authorize(self, scope: Scope) -> None:
        keys = self.config.api_keys
        if not keys:
            return
        headers = Headers(scope=scope)
        scheme, _, token = headers.get("authorization", "").partition(" ")
        bearer = token.strip() if scheme.lower() == "bearer" else None
        if headers.get("x-api-key") not in keys and bearer not in keys:
            raise Unauthorized("missing or wrong API key (send X-API-Key or Authorization: Bearer)")

    async def vectors(self, features: list[str] | None, service: str | None, entities: Any, request_data: Any,
                      request_time: Any, full_names: bool) -> Vectors:
        catalog = self.catalog
        if (features is None) == (service is None):
            raise Invalid("features / feature_service: give exactly one of them")
        refs = tuple(features) if features is not None else catalog.service_features(service or "")
        plan = catalog.plan(refs, full_names)
        cols, rows = columns(entities, request_data, self.config.max_entities)
        metrics.ENTITIES.observe(rows)
        check_keys(cols, plan.join_keys, catalog.specs.join_key_types)
        check_request_fields(cols, plan.request_fields)
        t_ms, chosen = request_time_ms(request_time, now_ms())
        return await self.retriever.vectors(catalog, plan, cols, rows, t_ms, chosen)

    async def online_features(self, body: bytes) -> dict[str, Any]:
        req: OnlineFeaturesRequest = decode(body, OnlineFeaturesRequest)
        found = await self.vectors(req.features, req.feature_service, req.entities, req.request_data,
                                   req.request_time, req.full_feature_names)
        return found.feast_response()

    async def predict(self, body: bytes) -> dict[str, Any]:
        req: PredictRequest = decode(body, PredictRequest)
        model = self.models.get(req.feature_service)
        if model is None:
            self.catalog.service_features(req.feature_service)  # 404 for an unknown service
            raise Invalid(f"feature_service: {req.feature_service!r} has no model configured (FEATURESTREAM_MODELS)")
        found = await self.vectors(None, req.feature_service, req.entities, req.request_data, req.request_time,
                                   req.full_feature_names)
        prediction = model.predict(found.feature_columns(), found.rows)
        out: dict[str, Any] = {"feature_service": req.feature_service, **prediction}
        if req.return_features:
            out["features"] = found.feast_response()
        return out


def _json(payload: Any, status: int = 200) -> Response:
    return Response(_dumps(payload), status, media_type=_JSON)


def _dumps(payload: Any) -> bytes:
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


Work = Callable[[bytes], Awaitable[Any]]  # a route's own work: request body -> response payload
Answer = Callable[[Scope, bytes], Awaitable[tuple[int, bytes]]]  # a whole route: (status, JSON bytes)


class ServingApp(FastAPI):
    """FastAPI, with the hot routes' own functions kept by path.

    `featurestream serve` answers POSTs to them before FastAPI (`serving.http_protocol`):
    its middleware and routing stack cost about as much CPU as the retrieval itself for one
    entity. The routes stay declared in FastAPI too, for other ASGI servers and the OpenAPI schema.
    """

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.hot: dict[str, Answer] = {}


def create_app(config: ServeConfig) -> FastAPI:
    """Everything is loaded here, before the first request: registry, models, Redis client."""
    state = ServingState(config)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        gc.collect()
        gc.freeze()  # the registry, Feast and the models stay for good: keep them out of every GC pass (p99)
        # A 100-entity request holds tens of thousands of reply objects: at the default 700 allocations per
        # young collection, each request paid dozens of passes over them (p99 of mixed 100 x 50: 17 -> 13 ms).
        gc.set_threshold(_YOUNG_COLLECTION_EVERY, *gc.get_threshold()[1:])
        background = [asyncio.create_task(state.refresh_forever()), asyncio.create_task(metrics.fold_forever())]
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            metrics.fold()
            await state.redis.close()

    app = ServingApp(title="featurestream serving API", lifespan=lifespan, version="0.1.0")
    app.state.serving = state

    def route(path: str, work: Work) -> Answer:
        latency = metrics.request_seconds(path)

        async def answer(scope: Scope, body: bytes) -> tuple[int, bytes]:
            started = time.perf_counter()
            try:
                state.authorize(scope)
                status, payload = 200, _dumps(await work(body))
            except ServingError as exc:
                metrics.REQUEST_ERRORS.labels(path, str(exc.status)).inc()
                status, payload = exc.status, _dumps({"detail": exc.detail})
            except Exception as exc:  # a bug of ours: say so, never hang
                log.exception("unexpected error")
                metrics.REQUEST_ERRORS.labels(path, "500").inc()
                status, payload = 500, _dumps({"detail": f"internal error: {type(exc).__name__}"})
            latency.observe(time.perf_counter() - started)
            return status, payload

        app.hot[path] = answer
        return answer

    online = route("/get-online-features", state.online_features)
    scored = route("/predict", state.predict)

    @app.post("/get-online-features", openapi_extra=_body_schema("OnlineFeaturesRequest"))
    async def get_online_features(request: Request) -> Response:
        """Feast's feature server route: features or a feature service, for entity rows."""
        return await _through_asgi(online, request)

    @app.post("/predict", openapi_extra=_body_schema("PredictRequest"))
    async def predict(request: Request) -> Response:
        """The feature service's vector, through its model."""
        return await _through_asgi(scored, request)

    @app.get("/health")
    async def health() -> Response:
        """Liveness (always 200 while the process serves), with Redis readiness in the body."""
        return _json({"status": "ok", "redis": "up" if await state.redis.ping() else "down",
                      "registry_age_s": round(time.monotonic() - state.loaded_at, 1)})

    @app.get("/health/ready")
    async def ready() -> Response:
        """Readiness: 503 while Redis does not answer."""
        up = await state.redis.ping()
        return _json({"status": "ready" if up else "redis unavailable"}, 200 if up else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> Response:  # a bug of ours: say so, never hang
        log.exception("unexpected error")
        return _json({"detail": f"internal error: {type(exc).__name__}"}, 500)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            _, components = msgspec.json.schema_components(
                (OnlineFeaturesRequest, PredictRequest), ref_template="#/components/schemas/{name}")
            schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


async def _through_asgi(answer: Answer, request: Request) -> Response:
    """A hot route reached through FastAPI: another ASGI server, or a request the protocol passed on."""
    status, payload = await answer(request.scope, await request.body())
    return Response(payload, status, media_type=_JSON)


def _body_schema(name: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {
        _JSON: {"schema": {"$ref": f"#/components/schemas/{name}"}}}}}


def app_from_env() -> FastAPI:
    """The uvicorn factory: each worker process builds its app from the environment."""
    from serving.config import load_serve_config

    return create_app(load_serve_config())
