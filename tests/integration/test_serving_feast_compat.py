"""Feast's own SDK, configured with Feast's `remote` online store pointing at `featurestream serve`, returns what the
SDK reading Redis directly returns, for batch views."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CLI
from tests.integration.test_serving_api import USERS, World, world  # noqa: F401  (the shared fixture)
from tests.ports import free_port

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::DeprecationWarning")
BATCH_REFS = ["user_profile:account_age_days", "user_profile:country", "user_profile:lifetime_orders",
              "user_profile:lifetime_spend", "user_loyalty:points", "item_stats:price", "item_stats:category",
              "item_stats:popularity_7d"]



@pytest.fixture(scope="module")
def server(world: World) -> Iterator[str]:  # noqa: F811
    """`featurestream serve` as a user starts it, in its own process."""
    port = free_port()
    process = subprocess.Popen([CLI, "serve", "--port", str(port)], env={**os.environ, **world.env},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"featurestream serve did not come up: {process.stderr.read().decode()}")
                time.sleep(0.3)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def remote_repo(root: Path, world: World, url: str) -> Path:  # noqa: F811
    """A Feast repo with the same project and registry, whose online store is the remote server."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "feature_store.yaml").write_text(
        f"project: {world.project}\nregistry: {world.repo / 'data' / 'registry.db'}\nprovider: local\n"
        f"online_store:\n  type: remote\n  path: {url}\nentity_key_serialization_version: 3\n")
    return root


@pytest.mark.parametrize("full_names", [False, True])
def test_remote_sdk_equals_direct_sdk_for_batch_views(server: str, world: World, tmp_path: Path,  # noqa: F811
                                                      full_names: bool) -> None:
    from feast import FeatureStore

    # User 11's row is older than the view's ttl: Feast's direct read ignores ttl online, the server reports it
    # OUTSIDE_MAX_AGE (null), as the training export would. It is compared on its own below.
    rows = [{"user_id": u, "item_id": 1 + u % 6} for u in [*USERS, 4040] if u != 11]
    direct = FeatureStore(repo_path=str(world.repo))
    remote = FeatureStore(repo_path=str(remote_repo(tmp_path / "remote", world, server)))
    want = direct.get_online_features(features=BATCH_REFS, entity_rows=rows, full_feature_names=full_names).to_dict()
    got = remote.get_online_features(features=BATCH_REFS, entity_rows=rows, full_feature_names=full_names).to_dict()
    assert got == want
    assert want["country" if not full_names else "user_profile__country"][0] == "C1"

    stale = remote.get_online_features(features=BATCH_REFS[:1], entity_rows=[{"user_id": 11}]).to_dict()
    assert stale == {"user_id": [11], "account_age_days": [None]}
