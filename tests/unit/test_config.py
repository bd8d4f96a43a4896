from pathlib import Path

import pytest

from featurestream.config import ConfigError, load_settings, redis_url_from_connection_string


def test_feast_connection_string_becomes_a_url() -> None:
    assert redis_url_from_connection_string("127.0.0.1:6379") == "redis://127.0.0.1:6379/0"
    assert redis_url_from_connection_string("h:6380,db=2,ssl=true,password=s3") == "rediss://:s3@h:6380/2"
    with pytest.raises(ConfigError, match="no host"):
        redis_url_from_connection_string("db=1")


def test_environment_overrides_the_repo(tmp_path: Path) -> None:
    (tmp_path / "feature_store.yaml").write_text(
        "project: p\nonline_store:\n  type: redis\n  connection_string: 'r:7000,db=3'\n"
    )
    from_repo = load_settings({"FEATURESTREAM_REPO": str(tmp_path)})
    assert from_repo.redis_url == "redis://r:7000/3"
    assert from_repo.redis_endpoint.port == 7000
    overridden = load_settings({"FEATURESTREAM_REPO": str(tmp_path), "FEATURESTREAM_REDIS_URL": "redis://x:1/0",
                                "FEATURESTREAM_KAFKA_BOOTSTRAP": "k:19092,k2:19092"})
    assert overridden.redis_url == "redis://x:1/0"
    assert str(overridden.kafka_endpoint) == "k:19092"


def test_bad_bootstrap_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="host:port"):
        _ = load_settings({"FEATURESTREAM_REPO": str(tmp_path), "FEATURESTREAM_KAFKA_BOOTSTRAP": "nohost"}).kafka_endpoint


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "feature_store.yaml").write_text("project: [unclosed\n")
    with pytest.raises(ConfigError, match="feature_store.yaml"):
        load_settings({"FEATURESTREAM_REPO": str(tmp_path)})
