"""Batch features of the training export equal Feast's own `get_historical_features` on the same repo."""

from __future__ import annotations

import atexit
import functools
import importlib
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from featurestream.definitions import load_repo
from featurestream.offline import export, export_to_parquet
from featurestream.generate import GenerateConfig, generate_demo_data
from tests.conftest import FEATURE_REPO

DAY_MS = 86_400_000
END = datetime(2026, 11, 20, tzinfo=UTC)
BATCH_FEATURES = ["user_profile:account_age_days", "user_profile:country", "user_profile:lifetime_orders",
                  "user_profile:lifetime_spend", "item_stats:price", "item_stats:category", "item_stats:popularity_7d"]


def applied_demo_repo(target: Path, redis_db: int = 6, users: int = 400, items: int = 80) -> tuple[Path, str]:
    """A copy of the demo repo under a fresh project on a private Redis db, with generated data, applied.

    `feast apply` runs in its own process: the repo's modules (and the data paths they resolve) must not
    be the ones this process already imported from the original repo.
    """
    shutil.copytree(FEATURE_REPO, target, ignore=shutil.ignore_patterns("data", "__pycache__"))
    project = f"t{uuid.uuid4().hex[:10]}"
    config = target / "feature_store.yaml"
    text = re.sub(r"^project: .*$", f"project: {project}", config.read_text(), flags=re.M)
    config.write_text(re.sub(r'connection_string: .*', f'connection_string: "127.0.0.1:6379,db={redis_db}"', text))
    generate_demo_data(GenerateConfig(out_dir=target / "data", end=END, users=users, items=items, events=2000))
    result = subprocess.run([str(Path(sys.executable).with_name("feast")), "apply"], cwd=target,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return target, project


@functools.cache
def shared_demo_repo() -> tuple[Path, str]:
    """One applied demo repo for the export and batch-materialization tests of a run (Redis db 6)."""
    parent = Path(tempfile.mkdtemp(prefix="fs-offline-"))
    atexit.register(shutil.rmtree, parent, True)
    return applied_demo_repo(parent / "feature_repo")


@pytest.fixture(scope="module")
def demo_repo() -> Path:
    return shared_demo_repo()[0]


def entity_rows(repo: Path, n: int, seed: int) -> pd.DataFrame:
    """Rows at snapshot times shifted onto the edges: equal times, ttl bounds, a ms either side; unknown entities too."""
    rng = np.random.default_rng(seed)
    users = pd.read_parquet(repo / "data" / "user_profile.parquet")
    snapshots = users["snapshot_ts"].astype("datetime64[ms, UTC]").astype("int64").to_numpy()
    ttl = 2 * DAY_MS
    shifts = rng.choice([0, 1, -1, ttl, ttl - 1, ttl + 1, 7 * 3_600_000, -3 * DAY_MS], n)
    picked = rng.integers(0, len(users), n)
    user_ids = users["user_id"].to_numpy()[picked]
    unknown = rng.random(n) < 0.05
    rows = pd.DataFrame({
        "user_id": np.where(unknown, 10**6 + np.arange(n), user_ids),
        "item_id": rng.integers(1, 90, n),  # 81..89 have no rows
        "event_timestamp": pd.to_datetime(snapshots[picked] + shifts, unit="ms", utc=True),
        "row_id": np.arange(n),
    })
    return rows.drop_duplicates(["user_id", "item_id", "event_timestamp"]).reset_index(drop=True)


def feast_historical(repo: Path, rows: pd.DataFrame, features: list[str], full_feature_names: bool) -> pd.DataFrame:
    from feast import FeatureStore

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store = FeatureStore(repo_path=str(repo))
        frame = store.get_historical_features(entity_df=rows, features=features,
                                              full_feature_names=full_feature_names).to_df()
    return frame.sort_values("row_id").reset_index(drop=True)


def assert_same_values(ours: pd.DataFrame, theirs: pd.DataFrame, columns: list[str]) -> None:
    for column in columns:
        a, b = ours[column], theirs[column]
        same = (a == b) | (a.isna() & b.isna())
        assert same.all(), f"{column} differs:\n{pd.concat([ours[~same], b[~same]], axis=1).head()}"


@pytest.mark.parametrize("full_feature_names", [False, True])
def test_batch_features_equal_feast(demo_repo: Path, full_feature_names: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if full_feature_names:  # entity rows in many small chunks: each chunk boundary must change nothing
        monkeypatch.setattr(importlib.import_module("featurestream.offline.export"), "CHUNK_ROWS", 211)
    rows = entity_rows(demo_repo, 3000, seed=int(full_feature_names))
    theirs = feast_historical(demo_repo, rows, BATCH_FEATURES, full_feature_names)
    ours = export(demo_repo, rows, features=BATCH_FEATURES, full_feature_names=full_feature_names).to_pandas()
    assert list(ours.columns) == list(theirs.columns)
    assert ours["row_id"].tolist() == rows["row_id"].tolist(), "rows keep the entity rows' order"
    features = list(ours.columns[4:])
    assert_same_values(ours, theirs, features)
    known = ours[features[0]].notna()
    assert 0.5 < known.mean() < 1, "some rows see a value, some (ttl, unknown entity) none"


def test_csv_entities_to_parquet(demo_repo: Path, tmp_path: Path) -> None:
    rows = entity_rows(demo_repo, 500, seed=7)
    rows.to_csv(tmp_path / "entities.csv", index=False)
    summary = export_to_parquet(load_repo(demo_repo), tmp_path / "entities.csv", tmp_path / "out" / "train.parquet",
                                features=BATCH_FEATURES)
    assert summary.rows == len(rows)
    assert summary.columns == tuple(pd.read_parquet(tmp_path / "out" / "train.parquet").columns)
    ours = pd.read_parquet(tmp_path / "out" / "train.parquet")
    theirs = feast_historical(demo_repo, rows, BATCH_FEATURES, False)
    assert_same_values(ours, theirs, list(ours.columns[4:]))
