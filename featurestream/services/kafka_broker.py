"""Apache Kafka in KRaft mode: an answering broker, docker compose, or one assembled from Maven Central jars.

The local path resolves `org.apache.kafka:kafka_2.13` with the Maven project in
`services/kafka/`, caches the jars, formats single-node KRaft storage and runs
`kafka.Kafka` with a bounded heap.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import uuid
from pathlib import Path

from featurestream.config import PACKAGE_ROOT, Settings
from featurestream.services.process import port_open, read_pid, start_background, tail, wait_until
from featurestream.services.state import ServiceError, ServiceState

NAME = "kafka"
POM = PACKAGE_ROOT / "services" / "kafka" / "pom.xml"
COMPOSE_FILE = PACKAGE_ROOT / "docker-compose.yml"
_LOG4J2 = """Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
"""


def _dir(settings: Settings) -> Path:
    return settings.state_dir / NAME


def pid_file(settings: Settings) -> Path:
    return _dir(settings) / "kafka.pid"


def _docker_marker(settings: Settings) -> Path:
    return _dir(settings) / "started-with-docker-compose"


def answers(settings: Settings, timeout: float = 3.0) -> bool:
    """True when a broker answers a metadata request (an open port alone is not enough)."""
    endpoint = settings.kafka_endpoint
    if not port_open(endpoint.host, endpoint.port):
        return False
    from confluent_kafka.admin import AdminClient
    from confluent_kafka import KafkaException

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "log_level": 0})
    try:
        return bool(admin.list_topics(timeout=timeout).brokers)
    except KafkaException:
        return False


def status(settings: Settings) -> ServiceState:
    pid = read_pid(pid_file(settings))
    address = str(settings.kafka_endpoint)
    if not answers(settings):
        return ServiceState(NAME, address, "down", pid)
    if pid:
        return ServiceState(NAME, address, "local", pid)
    return ServiceState(NAME, address, "docker" if _docker_marker(settings).exists() else "external")


def up(settings: Settings, use_docker: bool = True) -> ServiceState:
    current = status(settings)
    if current.running:
        return current
    if use_docker and _docker_compose_works():
        return _up_docker(settings)
    return _up_local(settings)


def down(settings: Settings) -> bool:
    """Stop the docker compose service if we started it that way; pid-file processes are stopped by the caller."""
    marker = _docker_marker(settings)
    if not marker.exists():
        return False
    subprocess.run(["docker", "compose", "-f", str(COMPOSE_FILE), "down"], capture_output=True)
    marker.unlink()
    return True


def _docker_compose_works() -> bool:
    if not shutil.which("docker") or not COMPOSE_FILE.is_file():
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True)
    return probe.returncode == 0 and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0


def _up_docker(settings: Settings) -> ServiceState:
    result = subprocess.run(["docker", "compose", "-f", str(COMPOSE_FILE), "up", "-d", "kafka"], capture_output=True, text=True)
    if result.returncode != 0:
        raise ServiceError(f"`docker compose up -d kafka` failed: {result.stderr.strip()[-800:]}")
    _dir(settings).mkdir(parents=True, exist_ok=True)
    _docker_marker(settings).touch()
    _wait_for_broker(settings, None)
    return ServiceState(NAME, str(settings.kafka_endpoint), "docker", started=True)


def _require(tool: str, what: str) -> str:
    found = shutil.which(tool)
    if not found:
        raise ServiceError(f"{tool} is not installed: {what}")
    return found


def ensure_libs(settings: Settings) -> Path:
    """The broker's jars, resolved by Maven once and reused from the cache afterwards."""
    libs = settings.kafka_libs
    marker = libs / ".complete"
    if marker.exists():
        return libs
    mvn = _require("mvn", "install Maven (Debian package `maven`) so the Kafka broker can be assembled from Maven Central")
    if not POM.is_file():
        raise ServiceError(f"the Maven project {POM} is missing; run featurestream from its source checkout")
    if libs.exists():
        shutil.rmtree(libs)
    build_dir = _dir(settings) / "maven-build"
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(POM), "package", f"-Dlibs.dir={libs}", f"-Dbuild.dir={build_dir}"],
        capture_output=True, text=True,
    )
    if result.returncode != 0 or not any(libs.glob("kafka_2.13-*.jar")):
        raise ServiceError(f"Maven could not resolve the Kafka jars:\n{(result.stdout + result.stderr).strip()[-1500:]}")
    marker.write_text("\n".join(sorted(p.name for p in libs.glob("*.jar"))) + "\n")
    return libs


def _server_properties(settings: Settings, data_dir: Path) -> str:
    endpoint = settings.kafka_endpoint
    controller = f"{endpoint.host}:{endpoint.port + 1}"
    return "\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@{controller}",
        f"listeners=PLAINTEXT://{endpoint},CONTROLLER://{controller}",
        f"advertised.listeners=PLAINTEXT://{endpoint}",
        "controller.listener.names=CONTROLLER",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "inter.broker.listener.name=PLAINTEXT",
        f"log.dirs={data_dir}",
        "num.partitions=4",
        "auto.create.topics.enable=true",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=4",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "",
    ])


def _new_cluster_id() -> str:
    """A random Kafka cluster id, never starting with '-', which the storage tool would read as an option.

    Kafka's own `kafka-storage random-uuid` draws again in that case, too (1 draw in 64).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _up_local(settings: Settings) -> ServiceState:
    java = _require("java", "install a Java 17+ runtime (Debian package `openjdk-17-jre-headless`) to run the Kafka broker")
    libs = ensure_libs(settings)
    home = _dir(settings)
    data_dir = home / "data"
    config = home / "server.properties"
    log4j = home / "log4j2.yaml"
    home.mkdir(parents=True, exist_ok=True)
    config.write_text(_server_properties(settings, data_dir))
    log4j.write_text(_LOG4J2)
    classpath = f"{libs}/*"
    log = home / "kafka.log"
    if not (data_dir / "meta.properties").exists():
        result = subprocess.run(
            [java, "-cp", classpath, f"-Dlog4j2.configurationFile={log4j}", "kafka.tools.StorageTool",
             "format", "-t", _new_cluster_id(), "-c", str(config)],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise ServiceError(f"formatting KRaft storage failed:\n{(result.stdout + result.stderr).strip()[-1500:]}")
    start_background(
        [java, "-Xms256m", f"-Xmx{settings.kafka_heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
         f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath, "kafka.Kafka", str(config)],
        pid_file(settings), log,
    )
    _wait_for_broker(settings, log)
    return ServiceState(NAME, str(settings.kafka_endpoint), "local", read_pid(pid_file(settings)), started=True)


def _wait_for_broker(settings: Settings, log: Path | None) -> None:
    owned = log is not None

    def ready_or_dead() -> bool:
        return answers(settings, 1.0) or (owned and read_pid(pid_file(settings)) is None)

    wait_until(ready_or_dead, 90, interval=0.3)
    if answers(settings, 2.0):
        return
    detail = f"; log {log}:\n{tail(log)}" if log else ""
    raise ServiceError(f"the Kafka broker did not answer on {settings.kafka_endpoint} within 90 s{detail}")
