"""Fixtures of the integration tests that run the real stream materializer."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_cli


@pytest.fixture
def stream_repo(repo_copy: Path, topic_name: str) -> Iterator[tuple[Path, dict[str, str]]]:
    """The demo repo reading `topic_name`, under a private project, applied with feast."""
    project = f"t{uuid.uuid4().hex[:8]}"
    source = repo_copy / "stream_features.py"
    source.write_text(source.read_text().replace('topic="clicks"', f'topic="{topic_name}"'))
    config = repo_copy / "feature_store.yaml"
    config.write_text(re.sub(r"^project: .*$", f"project: {project}", config.read_text(), flags=re.M))
    env = {"FEATURESTREAM_REPO": str(repo_copy)}
    applied = run_cli("apply", env=env)
    assert applied.returncode == 0, applied.stderr
    yield repo_copy, env
