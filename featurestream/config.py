"""Settings from `feature_store.yaml` and `FEATURESTREAM_*` environment variables, never from code.

| variable | default |
|---|---|
| FEATURESTREAM_REPO | `./feature_repo` (else the one beside this package) |
| FEATURESTREAM_REDIS_URL | from the repo's online_store connection_string, else redis://127.0.0.1:6379/0 |
| FEATURESTREAM_KAFKA_BOOTSTRAP | 127.0.0.1:9092 |
| FEATURESTREAM_STATE_DIR | `./.services` (pid files, logs, Kafka and Redis data) |
| FEATURESTREAM_KAFKA_LIBS | `<state dir>/kafka/libs` (the broker's jar cache) |
| FEATURESTREAM_KAFKA_HEAP | 768m |
| FEATURESTREAM_KAFKA_SECURITY_PROTOCOL, _SASL_MECHANISM, _SASL_USERNAME, _SASL_PASSWORD, _SSL_CA_LOCATION, _SSL_CERTIFICATE_LOCATION, _SSL_KEY_LOCATION | unset (PLAINTEXT) |
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """Configuration that cannot work; the message says which setting and why."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Settings:
    repo_path: Path
    redis_url: str
    kafka_bootstrap: str
    state_dir: Path
    kafka_libs: Path
    kafka_heap: str
    kafka_security: dict[str, str]

    @property
    def redis_endpoint(self) -> Endpoint:
        parts = urlsplit(self.redis_url)
        return Endpoint(parts.hostname or "127.0.0.1", parts.port or 6379)

    @property
    def kafka_endpoint(self) -> Endpoint:
        first = self.kafka_bootstrap.split(",")[0].strip()
        host, _, port = first.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"FEATURESTREAM_KAFKA_BOOTSTRAP {self.kafka_bootstrap!r} is not host:port")
        return Endpoint(host, int(port))


def _default_repo() -> Path:
    local = Path.cwd() / "feature_repo"
    return local if local.is_dir() else PACKAGE_ROOT / "feature_repo"


def redis_url_from_connection_string(connection_string: str) -> str:
    """Feast's `host:port,db=0,ssl=true,password=...` as a redis:// URL."""
    hosts = [part for part in connection_string.split(",") if "=" not in part]
    params = dict(part.split("=", 1) for part in connection_string.split(",") if "=" in part)
    if not hosts:
        raise ConfigError(f"online_store connection_string {connection_string!r} names no host:port")
    scheme = "rediss" if params.get("ssl", "").lower() == "true" else "redis"
    auth = f":{params['password']}@" if params.get("password") else ""
    return f"{scheme}://{auth}{hosts[0].strip()}/{params.get('db', 0)}"


def _repo_redis_url(repo_path: Path) -> str | None:
    config_file = repo_path / "feature_store.yaml"
    if not config_file.is_file():
        return None
    try:
        config = yaml.safe_load(config_file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{config_file} is not valid YAML: {exc}") from exc
    online = config.get("online_store") or {}
    if isinstance(online, dict) and online.get("type") == "redis" and online.get("connection_string"):
        return redis_url_from_connection_string(str(online["connection_string"]))
    return None


def load_settings(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    repo = Path(env.get("FEATURESTREAM_REPO") or _default_repo()).resolve()
    state_dir = Path(env.get("FEATURESTREAM_STATE_DIR") or Path.cwd() / ".services").resolve()
    return Settings(
        repo_path=repo,
        redis_url=env.get("FEATURESTREAM_REDIS_URL") or _repo_redis_url(repo) or "redis://127.0.0.1:6379/0",
        kafka_bootstrap=env.get("FEATURESTREAM_KAFKA_BOOTSTRAP") or "127.0.0.1:9092",
        state_dir=state_dir,
        kafka_libs=Path(env.get("FEATURESTREAM_KAFKA_LIBS") or state_dir / "kafka" / "libs").resolve(),
        kafka_heap=env.get("FEATURESTREAM_KAFKA_HEAP") or "768m",
        kafka_security={
            option: env[variable] for option, variable in KAFKA_SECURITY_ENV.items() if env.get(variable)
        },
    )


KAFKA_SECURITY_ENV = {
    option: "FEATURESTREAM_KAFKA_" + option.upper().replace(".", "_")
    for option in (
        "security.protocol", "sasl.mechanism", "sasl.username", "sasl.password",
        "ssl.ca.location", "ssl.certificate.location", "ssl.key.location",
    )
}


def kafka_client_config(settings: Settings) -> dict[str, str]:
    """librdkafka settings shared by every producer and consumer we create."""
    return {"bootstrap.servers": settings.kafka_bootstrap, **settings.kafka_security}
