"""`featurestream services up/down/status`: idempotent start, stop only what we started."""

from __future__ import annotations

from collections.abc import Iterable

from featurestream.config import Settings
from featurestream.services import kafka_broker, redis_server
from featurestream.services.process import stop
from featurestream.services.state import ServiceError, ServiceState

SERVICES = ("redis", "kafka")



def services_up(settings: Settings, names: Iterable[str] = SERVICES, use_docker: bool = True) -> list[ServiceState]:
    states = []
    for name in _check(names):
        states.append(redis_server.up(settings) if name == "redis" else kafka_broker.up(settings, use_docker))
    return states


def services_down(settings: Settings, names: Iterable[str] = SERVICES) -> list[str]:
    """Stop what `up` started (pid files, or our docker compose); return the names stopped."""
    stopped = []
    for name in _check(names):
        module = redis_server if name == "redis" else kafka_broker
        if stop(module.pid_file(settings), timeout=30) or (name == "kafka" and kafka_broker.down(settings)):
            stopped.append(name)
    return stopped


def services_status(settings: Settings) -> list[ServiceState]:
    return [redis_server.status(settings), kafka_broker.status(settings)]


def _check(names: Iterable[str]) -> list[str]:
    chosen = list(names)
    unknown = [n for n in chosen if n not in SERVICES]
    if unknown:
        raise ServiceError(f"unknown service {', '.join(unknown)}: choose from {', '.join(SERVICES)}")
    return chosen
