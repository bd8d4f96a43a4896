"""`featurestream demo`, end to end, on a private project and topic: every step runs and the story holds together."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from featurestream.definitions import load_repo
from featurestream.event_log_files import log_paths
from tests.conftest import run_cli

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def test_the_demo_runs_end_to_end_and_trains_on_every_applied_event(stream_repo: tuple[Path, dict[str, str]]) -> None:
    repo, env = stream_repo
    ran = run_cli("demo", "--events", "20000", "--users", "500", "--items", "100", "--training-rows", "4000",
                  "--predictions", "50", env=env, timeout=600)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert "50 calls" in ran.stdout, ran.stdout[-3000:]
    data = repo / "data"
    assert (data / "training" / "purchase_model_v1.parquet").is_file()
    assert (data / "models" / "purchase_model_v1.joblib").is_file()
    source = next(iter(load_repo(repo).stream_views.values())).source
    logged = sum(pq.read_metadata(path).num_rows for path in log_paths(Path(source.event_log_path or "")))
    applied = next(line for line in ran.stdout.splitlines() if "applied" in line and "replayed" in line)
    assert f"applied {logged:,}," in applied, (logged, applied)
