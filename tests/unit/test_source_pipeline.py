"""A source's micro-batch: views keyed alike and fed the same udf output share its per-entity events, and each
micro-batch gets new ones (the writer thread owns the batches handed over)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from featurestream.definitions import StreamViewSpec
from materializers.stream.progress import PartitionProgress
from materializers.stream.source import SourcePipeline
from tests.streams import demo_specs

EVENT = (b'{"event_id":"e1","user_id":7,"item_id":3,"event_type":"view","price":2.5,'
         b'"event_timestamp":"2026-11-27T10:00:00.000Z"}')
TS_MS = int(datetime(2026, 11, 27, 10, tzinfo=UTC).timestamp() * 1000)
NOW_MS = TS_MS + 3_600_000


def _views() -> dict[str, StreamViewSpec]:
    return dict(demo_specs().stream_views)


def _pipeline(views: list[StreamViewSpec]) -> SourcePipeline:
    pipeline = SourcePipeline("p", views[0].source, views, None)
    pipeline.partitions[0] = PartitionProgress()
    return pipeline


def test_views_keyed_alike_share_the_events_and_each_gets_every_event_once() -> None:
    views = _views()
    pipeline = _pipeline(list(views.values()))
    user_tiles, user_sessions = pipeline.tiles["user_activity"], pipeline.sessions["user_session"]
    assert user_tiles.events is user_sessions.events
    assert pipeline.tiles["item_activity"].events is not user_tiles.events
    assert pipeline.handle(0, 5, EVENT, NOW_MS) is None
    assert [e[:3] for e in user_sessions.events.fresh((7,), {0: -1})] == [(0, 5, TS_MS)]
    assert pipeline.tiles["item_activity"].events.entities() == [(3,)]


def test_another_udf_does_not_share() -> None:
    views = _views()
    own = dataclasses.replace(views["user_session"], name="raw_sessions", udf=None)
    pipeline = _pipeline([views["user_activity"], own])
    assert pipeline.tiles["user_activity"].events is not pipeline.sessions["raw_sessions"].events


def test_each_micro_batch_gets_new_events() -> None:
    pipeline = _pipeline(list(_views().values()))
    pipeline.handle(0, 5, EVENT, NOW_MS)
    tiles, sessions = pipeline.take_batches()
    handed = {id(b.events) for b in (*tiles, *sessions)}
    assert len(handed) == 2  # users (windows and sessions), items
    assert not handed & {id(b.events) for b in (*pipeline.tiles.values(), *pipeline.sessions.values())}
    assert all(len(b.events) == 0 for b in (*pipeline.tiles.values(), *pipeline.sessions.values()))
