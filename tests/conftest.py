"""Shared fixtures. Integration tests run against the real Kafka and Redis that `make test` starts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from featurestream.config import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
FEATURE_REPO = ROOT / "feature_repo"
CLI = str(Path(sys.executable).with_name("featurestream"))


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the installed `featurestream` console script as a user would."""
    return subprocess.run([CLI, *args], capture_output=True, text=True, env={**os.environ, **(env or {})},
                          cwd=cwd, timeout=timeout)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def redis_client(settings: Settings) -> redis.Redis:
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis does not answer at {settings.redis_url} ({exc}); run `featurestream services up`")
    return client


@pytest.fixture(scope="session")
def kafka_bootstrap(settings: Settings) -> str:
    from featurestream.services import kafka_broker

    if not kafka_broker.answers(settings):
        pytest.fail(f"Kafka does not answer at {settings.kafka_bootstrap}; run `featurestream services up`")
    return settings.kafka_bootstrap


@pytest.fixture
def topic_name() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def repo_copy(tmp_path: Path) -> Iterator[Path]:
    """A private copy of feature_repo/ (definitions only), so tests never touch the real registry."""
    target = tmp_path / "feature_repo"
    shutil.copytree(FEATURE_REPO, target, ignore=shutil.ignore_patterns("data", "__pycache__"))
    yield target


@pytest.fixture(scope="session")
def applied_repo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment pointing the CLI at an applied private copy of the demo repo (one `feast apply` per run)."""
    target = tmp_path_factory.mktemp("applied") / "feature_repo"
    shutil.copytree(FEATURE_REPO, target, ignore=shutil.ignore_patterns("data", "__pycache__"))
    env = {"FEATURESTREAM_REPO": str(target)}
    result = run_cli("apply", env=env)
    assert result.returncode == 0, result.stderr
    return env
