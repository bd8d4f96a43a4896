"""Shared set-up for the benchmarks: services, a private project, retargeted demo views, percentiles."""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from featurestream.config import Settings, load_settings
from featurestream.definitions import StreamViewSpec, check_repo
from featurestream.services import services_up

ROOT = Path(__file__).resolve().parent.parent


def ready_settings() -> Settings:
    settings = load_settings()
    services_up(settings)
    return settings


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def new_topic(settings: Settings, partitions: int, prefix: str = "bench") -> str:
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(30)
    return topic


def demo_views(topic: str, event_log: Path | None) -> list[StreamViewSpec]:
    """The demo repo's stream views, reading `topic` (and logging to `event_log`)."""
    specs = check_repo(ROOT / "feature_repo")
    views = []
    for view in specs.stream_views.values():
        source = dataclasses.replace(view.source, topic=topic,
                                     event_log_path=str(event_log) if event_log else None)
        views.append(dataclasses.replace(view, source=source))
    return views


def applied_repo_copy(topic: str, extra_files: dict[str, str] | None = None,
                      connection_string: str | None = None) -> tuple[Path, str]:
    """A copy of the demo repo under a private project, reading `topic`, applied with feast.

    `extra_files` adds definition modules (name -> source); `connection_string` replaces the online store's.
    """
    target = Path(tempfile.mkdtemp(prefix="fs-bench-")) / "feature_repo"
    shutil.copytree(ROOT / "feature_repo", target, ignore=shutil.ignore_patterns("data", "__pycache__"))
    project = f"bench{uuid.uuid4().hex[:8]}"
    views = target / "stream_features.py"
    views.write_text(views.read_text().replace('topic="clicks"', f'topic="{topic}"'))
    for name, source in (extra_files or {}).items():
        (target / name).write_text(source)
    config = target / "feature_store.yaml"
    text = re.sub(r"^project: .*$", f"project: {project}", config.read_text(), flags=re.M)
    if connection_string:
        text = re.sub(r"connection_string: .*", f'connection_string: "{connection_string}"', text)
    config.write_text(text)
    feast = Path(sys.executable).with_name("feast")
    subprocess.run([str(feast), "apply"], cwd=target, check=True, capture_output=True)
    return target, project


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]
