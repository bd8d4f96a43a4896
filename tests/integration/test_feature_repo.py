"""`feast apply` and `featurestream apply` on the demo feature repo; a bad definition never reaches the registry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from featurestream.definitions import load_repo
from tests.conftest import run_cli

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def test_feast_apply_and_our_loader_agree(repo_copy: Path) -> None:
    feast = Path(sys.executable).with_name("feast")
    result = subprocess.run([str(feast), "apply"], cwd=repo_copy, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    specs = load_repo(repo_copy)
    assert set(specs.batch_views) == {"user_profile", "item_stats"}
    assert set(specs.stream_views) == {"user_activity", "item_activity", "user_session"}
    assert specs.stream_views["user_session"].session_gap_ms == 30 * 60_000
    assert set(specs.on_demand_views) == {"candidate_price_features"}
    assert len(specs.feature_services["purchase_model_v1"].features) == 24
    shown = run_cli("show", env={"FEATURESTREAM_REPO": str(repo_copy)})
    assert shown.returncode == 0 and "user_session" in shown.stdout


def test_a_bad_definition_is_rejected_before_the_registry_changes(repo_copy: Path) -> None:
    env = {"FEATURESTREAM_REPO": str(repo_copy)}
    assert run_cli("apply", env=env).returncode == 0
    registry = repo_copy / "data" / "registry.db"
    before = registry.read_bytes()
    views = repo_copy / "stream_features.py"
    views.write_text(views.read_text().replace("time_window=HOUR, slide_interval=MINUTE, name=\"events_1h\"",
                                               "time_window=HOUR, slide_interval=7 * MINUTE, name=\"events_1h\""))
    result = run_cli("apply", env=env)
    assert result.returncode == 1
    assert "'user_activity'" in result.stderr and "'events_1h'" in result.stderr and "does not divide" in result.stderr
    assert "Traceback" not in result.stderr
    assert registry.read_bytes() == before
