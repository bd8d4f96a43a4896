"""The real services: they answer, `up` is idempotent, `down` stops only what `up` started."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, Producer

from featurestream.config import Settings
from featurestream.services.process import port_open, read_pid
from tests.conftest import run_cli
from tests.ports import free_port


def test_one_message_through_the_real_broker(kafka_bootstrap: str, topic_name: str) -> None:
    delivered: list[str] = []
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic_name, key=b"k", value=b'{"hello": 1}',
                     on_delivery=lambda err, msg: delivered.append(str(err) if err else "ok"))
    assert producer.flush(30) == 0
    assert delivered == ["ok"]
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": topic_name,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic_name])
    try:
        received = None
        for _ in range(60):
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                received = msg
                break
        assert received is not None, "no message consumed within 60 s"
        assert (received.key(), received.value()) == (b"k", b'{"hello": 1}')
    finally:
        consumer.close()


def test_redis_set_and_get(redis_client: redis.Redis, topic_name: str) -> None:
    redis_client.set(topic_name, b"value", ex=60)
    assert redis_client.get(topic_name) == b"value"


def test_second_up_is_a_no_op(settings: Settings, redis_client: redis.Redis, kafka_bootstrap: str) -> None:
    from featurestream.services import kafka_broker, redis_server

    pids_before = (read_pid(redis_server.pid_file(settings)), read_pid(kafka_broker.pid_file(settings)))
    result = run_cli("services", "up", "--print-started")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
    assert (read_pid(redis_server.pid_file(settings)), read_pid(kafka_broker.pid_file(settings))) == pids_before
    status = run_cli("services", "status")
    assert status.returncode == 0 and "redis" in status.stdout and "kafka" in status.stdout



@pytest.fixture
def private_services(tmp_path: Path, settings: Settings) -> dict[str, str]:
    """Settings for a second Redis and Kafka on free ports in a private state dir, sharing the jar cache."""
    kafka_port = free_port(2)
    redis_port = free_port()
    while redis_port in (kafka_port, kafka_port + 1):
        redis_port = free_port()
    return {
        "FEATURESTREAM_STATE_DIR": str(tmp_path / "state"),
        "FEATURESTREAM_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "FEATURESTREAM_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}",
        "FEATURESTREAM_KAFKA_LIBS": str(settings.kafka_libs),
        "FEATURESTREAM_KAFKA_HEAP": "384m",
    }


def _pids(state: Path) -> list[int]:
    return [int(p.read_text()) for p in sorted(state.glob("*/*.pid"))]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")


def test_up_up_down_lifecycle(private_services: dict[str, str]) -> None:
    env = {**private_services}
    state = Path(env["FEATURESTREAM_STATE_DIR"])
    first = run_cli("services", "up", "--no-docker", "--print-started", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == ["redis", "kafka"]
    pids = _pids(state)
    assert len(pids) == 2 and all(_alive(p) for p in pids)

    second = run_cli("services", "up", "--no-docker", "--print-started", env=env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == ""
    assert _pids(state) == pids

    down = run_cli("services", "down", env=env)
    assert down.returncode == 0, down.stderr
    assert "redis" in down.stdout and "kafka" in down.stdout
    assert not any(_alive(p) for p in pids)
    assert _pids(state) == []
    redis_port = int(env["FEATURESTREAM_REDIS_URL"].rsplit(":", 1)[1].split("/")[0])
    kafka_port = int(env["FEATURESTREAM_KAFKA_BOOTSTRAP"].rsplit(":", 1)[1])
    assert not port_open("127.0.0.1", redis_port) and not port_open("127.0.0.1", kafka_port)

    again = run_cli("services", "down", env=env)
    assert again.returncode == 0 and "nothing of ours" in again.stdout
    status = run_cli("services", "status", env=env)
    assert status.returncode == 1 and "down" in status.stdout


def test_down_never_stops_a_service_it_did_not_start(settings: Settings, redis_client: redis.Redis,
                                                    private_services: dict[str, str]) -> None:
    env = {**private_services, "FEATURESTREAM_REDIS_URL": settings.redis_url}
    result = run_cli("services", "down", "redis", env=env)
    assert result.returncode == 0 and "nothing of ours" in result.stdout
    assert redis_client.ping()


def _path_without(*tools: str) -> str:
    """A PATH with the venv's scripts but none of `tools`."""
    keep = {str(Path(sys.executable).parent)}
    keep |= {str(Path(p).parent) for p in (shutil.which("python3"),) if p}
    return os.pathsep.join(d for d in keep if not any(Path(d, t).exists() for t in tools))


def test_missing_java_is_a_sentence_not_a_traceback(private_services: dict[str, str]) -> None:
    env = {**private_services, "PATH": _path_without("java", "mvn")}
    result = run_cli("services", "up", "kafka", "--no-docker", env=env)
    assert result.returncode == 1
    assert "java is not installed" in result.stderr and "Traceback" not in result.stderr


def test_missing_maven_is_a_sentence_not_a_traceback(private_services: dict[str, str], tmp_path: Path) -> None:
    java = shutil.which("java")
    assert java is not None
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "java").symlink_to(java)
    env = {**private_services, "FEATURESTREAM_KAFKA_LIBS": str(tmp_path / "empty-libs"),
           "PATH": os.pathsep.join([str(bin_dir), _path_without("java", "mvn")])}
    result = run_cli("services", "up", "kafka", "--no-docker", env=env)
    assert result.returncode == 1
    assert "mvn is not installed" in result.stderr and "Traceback" not in result.stderr
