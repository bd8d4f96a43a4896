"""Serving settings from `FEATURESTREAM_*` environment variables (and the repo's feature_store.yaml via featurestream.config).

| variable | default |
|---|---|
| FEATURESTREAM_SERVE_MAX_ENTITIES | 1000 (more entity rows in one request is a 413) |
| FEATURESTREAM_SERVE_API_KEYS | unset: no authentication; else comma-separated keys, sent as `X-API-Key` or `Authorization: Bearer` |
| FEATURESTREAM_SERVE_REDIS_TIMEOUT_S | 1.0 (a request waits at most this for Redis, then answers 503) |
| FEATURESTREAM_REGISTRY_REFRESH_S | 60 (the registry is re-read in the background this often) |
| FEATURESTREAM_MODELS | unset; `<feature service>=<model.joblib or module:function>`, comma-separated |
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from featurestream.config import ConfigError, Settings, load_settings


@dataclass(frozen=True)
class ServeConfig:
    settings: Settings
    max_entities: int = 1000
    api_keys: frozenset[str] = frozenset()
    redis_timeout_s: float = 1.0
    registry_refresh_s: float = 60.0
    models: dict[str, str] = field(default_factory=dict)  # feature service -> model reference


def _number(env: dict[str, str], name: str, default: float, kind: type) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a {kind.__name__}") from None
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be positive")
    return value


def parse_models(text: str) -> dict[str, str]:
    """`svc=model.joblib,other=pkg.mod:predict` -> {service: reference}."""
    models = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        service, sep, reference = item.partition("=")
        if not sep or not service.strip() or not reference.strip():
            raise ConfigError(f"FEATURESTREAM_MODELS entry {item!r} is not <feature service>=<model>")
        models[service.strip()] = reference.strip()
    return models


def load_serve_config(env: dict[str, str] | None = None, models: dict[str, str] | None = None) -> ServeConfig:
    env = dict(os.environ if env is None else env)
    return ServeConfig(
        settings=load_settings(env),
        max_entities=int(_number(env, "FEATURESTREAM_SERVE_MAX_ENTITIES", 1000, int)),
        api_keys=frozenset(k.strip() for k in env.get("FEATURESTREAM_SERVE_API_KEYS", "").split(",") if k.strip()),
        redis_timeout_s=_number(env, "FEATURESTREAM_SERVE_REDIS_TIMEOUT_S", 1.0, float),
        registry_refresh_s=_number(env, "FEATURESTREAM_REGISTRY_REFRESH_S", 60.0, float),
        models={**parse_models(env.get("FEATURESTREAM_MODELS", "")), **(models or {})},
    )
