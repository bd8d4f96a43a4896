"""The stream materializer's Redis writes: compare-and-set through the sink's cache of what it last wrote
(never a stale or double-counted state), and the script lost by Redis loaded again."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis

from featurestream.definitions import StreamViewSpec
from featurestream.online.keys import state_key
from featurestream.online.reader import window_features
from featurestream.windows import sessions
from materializers.stream import redis_sink
from materializers.stream.commands import CommandStream
from materializers.stream.redis_sink import RedisSink
from materializers.stream.session_batch import SessionBatch
from materializers.stream.tile_batch import TileBatch
from tests.streams import retarget

T0 = 1_795_000_000_000
MINUTE = 60_000
USER = (7,)


def _view(tmp_path: Path, name: str = "user_session") -> StreamViewSpec:
    return next(v for v in retarget(f"t-{uuid.uuid4().hex[:8]}", tmp_path / "log") if v.name == name)


def _write(sink: RedisSink, project: str, view: StreamViewSpec, events: list[tuple[int, int, int]]) -> None:
    """(partition, offset, event time) of purchases of 1.0 by USER, as one micro-batch."""
    batch = SessionBatch(project, view)
    for partition, offset, ts_ms in events:
        batch.events.add(USER, partition, offset, ts_ms, {"purchase_value": 1.0})
    sink.write([], [batch])


def _session(client: redis.Redis, project: str, view: StreamViewSpec) -> tuple[int, int, float]:
    """(start, event count, purchase value) of the entity's only session."""
    (session,) = sessions.decode(client.hget(state_key(project, view.name, view.join_keys, USER), "s"))
    return session[sessions.START], session[sessions.COUNT], session[sessions.AGGS]["session_purchase_value"]["s"]


def test_a_write_by_another_process_is_read_not_overwritten(tmp_path: Path, redis_client: redis.Redis) -> None:
    view, project = _view(tmp_path), f"t{uuid.uuid4().hex[:8]}"
    first, second = RedisSink(redis_client), RedisSink(redis_client)
    _write(first, project, view, [(0, 1, T0)])
    _write(second, project, view, [(1, 1, T0 + MINUTE)])
    _write(first, project, view, [(0, 2, T0 + 2 * MINUTE)])
    assert _session(redis_client, project, view) == (T0, 3, 3.0)


def test_replayed_offsets_count_once_from_the_cache(tmp_path: Path, redis_client: redis.Redis) -> None:
    view, project = _view(tmp_path), f"t{uuid.uuid4().hex[:8]}"
    sink = RedisSink(redis_client)
    _write(sink, project, view, [(0, offset, T0 + offset * MINUTE) for offset in (1, 2, 3)])
    _write(sink, project, view, [(0, offset, T0 + offset * MINUTE) for offset in (2, 3, 4)])
    assert _session(redis_client, project, view) == (T0 + MINUTE, 4, 4.0)


def test_a_key_deleted_and_recreated_elsewhere_is_not_resurrected(tmp_path: Path, redis_client: redis.Redis) -> None:
    view, project = _view(tmp_path), f"t{uuid.uuid4().hex[:8]}"
    first, second = RedisSink(redis_client), RedisSink(redis_client)
    _write(first, project, view, [(0, 1, T0)])
    redis_client.delete(state_key(project, view.name, view.join_keys, USER))
    _write(second, project, view, [(1, 1, T0 + 5 * MINUTE)])  # the same number of writes as `first` made
    _write(first, project, view, [(0, 2, T0 + 10 * MINUTE)])
    assert _session(redis_client, project, view) == (T0 + 5 * MINUTE, 2, 2.0)


def test_scripts_flushed_from_redis_are_loaded_again(tmp_path: Path, redis_client: redis.Redis) -> None:
    sessions_view, activity = _view(tmp_path), _view(tmp_path, "user_activity")
    project = f"t{uuid.uuid4().hex[:8]}"
    sink = RedisSink(redis_client)
    for offset in (1, 2):
        if offset == 2:
            redis_client.script_flush()  # what a restarted Redis, or a failover to a new primary, looks like
        tiles, sessions = TileBatch(project, activity), SessionBatch(project, sessions_view)
        event = {"event_id": f"e{offset}", "user_id": USER[0], "item_id": 3, "event_type": "purchase", "price": 1.0}
        row = activity.udf(event) if activity.udf else event
        tiles.events.add(USER, 0, offset, T0 + offset * MINUTE, row)
        sessions.events.add(USER, 0, offset, T0 + offset * MINUTE, row)
        sink.write([tiles], [sessions])
    assert _session(redis_client, project, sessions_view) == (T0 + MINUTE, 2, 2.0)
    state = redis_client.hget(state_key(project, activity.name, activity.join_keys, USER), "s")
    assert window_features(activity, state, T0 + 3 * MINUTE)["events_1h"] == 2


def test_a_connection_lost_after_redis_took_the_writes_counts_them_once(
        tmp_path: Path, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cached states were updated in place for a write whose replies never came: the retry forgets them,
    reads Redis, and finds the fences of what it took."""
    view, project = _view(tmp_path), f"t{uuid.uuid4().hex[:8]}"
    sink = RedisSink(redis_client)
    _write(sink, project, view, [(0, 1, T0)])  # cached
    lost = []

    class LosesTheFirstReplies(CommandStream):
        def replies(self) -> list[object]:
            replies = super().replies()
            if not lost:
                lost.append(replies)
                raise redis.ConnectionError("connection reset by peer")
            return replies

    monkeypatch.setattr(redis_sink, "command_stream", LosesTheFirstReplies)
    monkeypatch.setattr(redis_sink.time, "sleep", lambda seconds: None)
    _write(sink, project, view, [(0, 2, T0 + MINUTE), (0, 3, T0 + 2 * MINUTE)])
    assert lost == [[[1]]]  # a compare-and-set from the cache, which Redis took
    assert _session(redis_client, project, view) == (T0, 3, 3.0)
    _write(sink, project, view, [(0, 3, T0 + 2 * MINUTE), (0, 4, T0 + 3 * MINUTE)])
    assert _session(redis_client, project, view) == (T0, 4, 4.0)
