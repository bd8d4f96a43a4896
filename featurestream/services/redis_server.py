"""Redis from the Debian `redis-server` package, data under the state dir."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import redis

from featurestream.config import Settings
from featurestream.services.process import read_pid, start_background, tail, wait_until
from featurestream.services.state import ServiceError, ServiceState

NAME = "redis"


def _dir(settings: Settings) -> Path:
    return settings.state_dir / NAME


def pid_file(settings: Settings) -> Path:
    return _dir(settings) / "redis.pid"


def answers(settings: Settings, timeout: float = 1.0) -> bool:
    try:
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
        return bool(client.ping())
    except redis.RedisError:
        return False


def _redis_server_binary(settings: Settings) -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "redis-server"]):
            result = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if result.returncode != 0:
                raise ServiceError(f"`{' '.join(cmd)}` failed: {result.stderr.strip()[-500:]}")
        found = shutil.which("redis-server")
        if found:
            return found
    raise ServiceError(
        "redis-server is not installed: install the Debian package (`sudo apt-get install redis-server`) "
        f"or start Redis yourself on {settings.redis_endpoint}"
    )


def status(settings: Settings) -> ServiceState:
    pid = read_pid(pid_file(settings))
    if answers(settings):
        return ServiceState(NAME, str(settings.redis_endpoint), "local" if pid else "external", pid)
    return ServiceState(NAME, str(settings.redis_endpoint), "down", pid)


# A listpack hash is a linear scan per field. Without a config file the server's built-in limit (512)
# applies, and a tile hash of a few hundred fields would stay one (47 us for an 8-field HMGET on a
# 356-field key here). At redis.conf's 128, Feast's hash of an entity, one field per batch feature of
# every view, stays one too: an HMGET of 50 of its 55 fields cost 35 us, against 10 us as a hash table
# (`bench`-style pipeline of 1,000, INFO commandstats). At 32 it is a hash table, at three times the
# memory (3.2 KB against 1.1 KB for that key); small hashes (a view's tiles, short rows) stay compact.
LISTPACK_LIMIT = ("--hash-max-listpack-entries", "32")


def up(settings: Settings) -> ServiceState:
    current = status(settings)
    if current.running:
        return current
    endpoint = settings.redis_endpoint
    binary = _redis_server_binary(settings)
    data = _dir(settings)
    data.mkdir(parents=True, exist_ok=True)
    log = data / "redis.log"
    start_background(
        [binary, "--bind", endpoint.host, "--port", str(endpoint.port), "--dir", str(data),
         "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes",
         *LISTPACK_LIMIT],
        pid_file(settings), log,
    )
    if not wait_until(lambda: answers(settings, 0.3) or read_pid(pid_file(settings)) is None, 20):
        raise ServiceError(f"redis-server did not answer on {endpoint} within 20 s; log {log}:\n{tail(log)}")
    if read_pid(pid_file(settings)) is None:
        raise ServiceError(f"redis-server exited at start; log {log}:\n{tail(log)}")
    return ServiceState(NAME, str(endpoint), "local", read_pid(pid_file(settings)), started=True)
