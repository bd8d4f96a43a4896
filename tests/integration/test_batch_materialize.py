"""Batch materialization writes what `feast materialize` writes, byte for byte, and Feast's SDK reads it."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import redis

from featurestream.definitions import load_repo
from materializers.batch.encode import timestamps
from materializers.batch.progress import last_done, progress_key
from materializers.batch.redis_writer import EXISTS_GROUP, FeastLayoutWriter, newer
from materializers.batch.runner import materialize
from tests.conftest import run_cli
from tests.integration.test_export_batch import shared_demo_repo

REDIS_DB = 6
START = datetime(2026, 11, 14, tzinfo=UTC)
MIDDLE = datetime(2026, 11, 16, 6, tzinfo=UTC)
END = datetime(2026, 11, 18, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def repo() -> Iterator[tuple[Path, str]]:
    target, project = shared_demo_repo()
    yield target, project
    clear(redis.Redis(db=REDIS_DB), project)


def project_keys(client: redis.Redis, project: str) -> list[bytes]:
    return list(client.scan_iter(match=b"*" + project.encode(), count=10_000))


def clear(client: redis.Redis, project: str) -> None:
    keys = project_keys(client, project)
    if keys:
        client.delete(*keys)
    client.delete(progress_key(project))


def snapshot(client: redis.Redis, project: str) -> dict[bytes, dict[bytes, bytes]]:
    return {key: client.hgetall(key) for key in project_keys(client, project)}


def feast_materialized(repo_path: Path, client: redis.Redis, project: str) -> dict[bytes, dict[bytes, bytes]]:
    """What `feast materialize` over START..END leaves in Redis; Redis is left empty for the next writer."""
    from feast import FeatureStore

    clear(client, project)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        FeatureStore(repo_path=str(repo_path)).materialize(START, END, feature_views=["user_profile", "item_stats"])
    theirs = snapshot(client, project)
    clear(client, project)
    return theirs


def ours(repo_path: Path, start: datetime | None, end: datetime) -> None:
    """Our materializer in process (the CLI has its own test); start None means incremental."""
    materialize(load_repo(repo_path), repo_path, redis.Redis(db=REDIS_DB), None, int(end.timestamp() * 1000),
                None if start is None else int(start.timestamp() * 1000))


def test_same_bytes_as_feast_materialize_and_feast_reads_them(repo: tuple[Path, str]) -> None:
    repo_path, project = repo
    client = redis.Redis(db=REDIS_DB)
    theirs = feast_materialized(repo_path, client, project)
    assert len(theirs) > 400

    result = run_cli("materialize", "batch", "--start", START.isoformat(), "--end", END.isoformat(),
                     env={"FEATURESTREAM_REPO": str(repo_path)})
    assert result.returncode == 0, result.stderr + result.stdout
    assert "user_profile" in result.stdout and "item_stats" in result.stdout
    assert snapshot(client, project) == theirs

    from feast import FeatureStore

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        online = FeatureStore(repo_path=str(repo_path)).get_online_features(
            features=["user_profile:lifetime_spend", "user_profile:country"],
            entity_rows=[{"user_id": 1}, {"user_id": 10**9}]).to_dict()
    assert online["lifetime_spend"][0] is not None and online["country"][1] is None


def test_incremental_continues_where_the_last_run_ended(repo: tuple[Path, str]) -> None:
    repo_path, project = repo
    client = redis.Redis(db=REDIS_DB)
    theirs = feast_materialized(repo_path, client, project)

    ours(repo_path, START, MIDDLE)
    first = snapshot(client, project)
    assert first != theirs
    done = last_done(client, project, "user_profile")
    assert done is not None and done.end_ms == int(MIDDLE.timestamp() * 1000)
    ours(repo_path, None, END)
    assert snapshot(client, project) == theirs
    done = last_done(client, project, "item_stats")
    assert done is not None and (done.start_ms, done.end_ms) == (int(MIDDLE.timestamp() * 1000),
                                                                 int(END.timestamp() * 1000))
    # Running an older range again never overwrites newer rows (Feast's rule).
    ours(repo_path, START, MIDDLE)
    assert snapshot(client, project) == theirs


def test_bad_arguments_are_clear(repo: tuple[Path, str]) -> None:
    env = {"FEATURESTREAM_REPO": str(repo[0])}
    result = run_cli("materialize", "batch", "--start", "yesterday", env=env)
    assert result.returncode != 0 and "is not an ISO" in " ".join(result.stderr.split())
    with pytest.raises(ValueError, match="unknown batch feature view 'nope'"):
        materialize(load_repo(repo[0]), repo[0], redis.Redis(db=REDIS_DB), ["nope"], 0, None)


def test_writer_sets_expiry_keeps_newer_rows_and_raises_redis_errors() -> None:
    client = redis.Redis(db=REDIS_DB)
    keys = [b"fs-writer-test:%d" % i for i in range(3)]
    client.delete(*keys)
    ts_field, fields = b"_ts:v", [b"f1"]

    def write(nanos: list[int], values: list[bytes], expiry: int | None) -> int:
        stamps, totals = timestamps(pa.array(nanos, pa.timestamp("ns", tz="UTC")))
        with FeastLayoutWriter(client, ts_field, fields, expiry) as writer:
            taken = pa.array(newer(np.asarray(totals), writer.stored(pa.array(keys, pa.binary()))))
            writer.write(pa.array(keys, pa.binary()).filter(taken), stamps.filter(taken),
                         [pa.array(values, pa.binary()).filter(taken)])
        return writer.written

    try:
        assert write([10**18, 10**18, 10**18], [b"a", b"b", b"c"], 3600) == 3
        assert all(0 < client.ttl(key) <= 3600 for key in keys)
        # Same time or older: kept; newer: replaced (Feast's rule).
        assert write([10**18, 10**18 - 1, 10**18 + 1], [b"x", b"y", b"z"], None) == 1
        assert [client.hget(key, b"f1") for key in keys] == [b"a", b"b", b"z"]
        client.delete(keys[0])
        client.set(keys[0], b"not a hash")
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            write([2 * 10**18] * 3, [b"p", b"q", b"r"], None)
        assert client.ping()  # the pool is usable after the failed write
    finally:
        client.delete(*keys)


def test_writer_reads_only_groups_with_a_stored_key() -> None:
    """Stored timestamps come back in order whichever EXISTS groups hold a key, and missing keys read 0."""
    client = redis.Redis(db=REDIS_DB)
    keys = [b"fs-writer-groups:%d" % i for i in range(5 * EXISTS_GROUP)]
    client.delete(*keys)
    present = {EXISTS_GROUP - 1: 5, 3 * EXISTS_GROUP: 2 * 10**18}  # the last and first keys of groups
    stamps, _ = timestamps(pa.array(list(present.values()), pa.timestamp("ns", tz="UTC")))
    for index, stamp in zip(present, stamps.to_pylist()):
        client.hset(keys[index], b"_ts:v", stamp)
    client.hset(keys[4 * EXISTS_GROUP + 7], b"other", b"x")  # a key of another view's fields only
    try:
        with FeastLayoutWriter(client, b"_ts:v", [b"f1"], None) as writer:
            stored = writer.stored(pa.array(keys, pa.binary()))
        assert stored.tolist() == [present.get(i, 0) for i in range(len(keys))]
    finally:
        client.delete(*keys)
