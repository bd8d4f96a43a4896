"""Feast's own SDK, configured with Feast's `remote` online store pointing at `featurestream serve`, returns what the
SDK reading Redis directly returns, for batch views; the server's workers each listen on a socket of their own."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.conftest import CLI
from tests.integration.test_serving_api import USERS, World, world  # noqa: F401  (the shared fixture)
from tests.ports import free_port, listening_sockets

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::DeprecationWarning")
BATCH_REFS = ["user_profile:account_age_days", "user_profile:country", "user_profile:lifetime_orders",
              "user_profile:lifetime_spend", "user_loyalty:points", "item_stats:price", "item_stats:category",
              "item_stats:popularity_7d"]



@dataclass(frozen=True)
class Served:
    url: str
    port: int
    process: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def served(world: World) -> Iterator[Served]:  # noqa: F811
    """`featurestream serve --workers 2` as a user starts it, in its own process."""
    port = free_port()
    process = subprocess.Popen([CLI, "serve", "--port", str(port), "--workers", "2"], env={**os.environ, **world.env},
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
        yield Served(url, port, process)
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
def test_remote_sdk_equals_direct_sdk_for_batch_views(served: Served, world: World, tmp_path: Path,  # noqa: F811
                                                      full_names: bool) -> None:
    from feast import FeatureStore

    # User 11's row is older than the view's ttl: Feast's direct read ignores ttl online, the server reports it
    # OUTSIDE_MAX_AGE (null), as the training export would. It is compared on its own below.
    rows = [{"user_id": u, "item_id": 1 + u % 6} for u in [*USERS, 4040] if u != 11]
    direct = FeatureStore(repo_path=str(world.repo))
    remote = FeatureStore(repo_path=str(remote_repo(tmp_path / "remote", world, served.url)))
    want = direct.get_online_features(features=BATCH_REFS, entity_rows=rows, full_feature_names=full_names).to_dict()
    got = remote.get_online_features(features=BATCH_REFS, entity_rows=rows, full_feature_names=full_names).to_dict()
    assert got == want
    assert want["country" if not full_names else "user_profile__country"][0] == "C1"

    stale = remote.get_online_features(features=BATCH_REFS[:1], entity_rows=[{"user_id": 11}]).to_dict()
    assert stale == {"user_id": [11], "account_age_days": [None]}


def test_each_worker_listens_on_a_socket_of_its_own_and_connections_spread(served: Served) -> None:
    workers = [child for child in psutil.Process(served.process.pid).children()
               if "spawn_main" in " ".join(child.cmdline())]
    assert len(workers) == 2
    deadline = time.monotonic() + 60  # the server answers as soon as one worker does; the other may still load
    while not all(sockets := [listening_sockets(worker.pid, served.port) for worker in workers]):
        assert time.monotonic() < deadline, sockets
        time.sleep(0.2)
    assert all(len(held) == 1 for held in sockets) and sockets[0] != sockets[1], sockets
    connections = [http.client.HTTPConnection("127.0.0.1", served.port, timeout=10) for _ in range(24)]
    try:
        for connection in connections:  # opened at once and kept alive, as a client's pool is
            connection.request("GET", "/health")
            assert connection.getresponse().read()
        ours = {connection.sock.getsockname()[1] for connection in connections}
        held = [sum(c.status == psutil.CONN_ESTABLISHED and c.raddr and c.raddr.port in ours
                    for c in worker.net_connections("tcp")) for worker in workers]
    finally:
        for connection in connections:
            connection.close()
    assert sum(held) == 24 and min(held) > 0  # all on one worker: 2 chances in 2^24 with the kernel's hash


def test_a_second_server_on_a_taken_port_says_so(served: Served, world: World) -> None:  # noqa: F811
    second = subprocess.run([CLI, "serve", "--port", str(served.port), "--workers", "2"], env={**os.environ, **world.env},
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 1
    assert f"cannot listen on 127.0.0.1:{served.port}" in second.stderr


def test_several_workers_on_port_0_are_refused(world: World) -> None:  # noqa: F811
    refused = subprocess.run([CLI, "serve", "--port", "0", "--workers", "2"], env={**os.environ, **world.env},
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "several workers need a fixed port" in refused.stderr
