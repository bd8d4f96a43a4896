"""A source's micro-batch: views keyed alike and fed the same udf output share its per-entity events, and each
micro-batch gets new ones (the writer thread owns the batches handed over)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from featurestream_native import route

from featurestream.definitions import StreamViewSpec
from materializers.stream.decode import LATE, UDF_ERROR, UNDECODABLE
from materializers.stream.progress import PartitionProgress
from materializers.stream.source import SourcePipeline
from tests.streams import FakeMessage, demo_specs

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


def _handle(pipeline: SourcePipeline, partition: int, offset: int, value: bytes, now_ms: int) -> tuple[str, str] | None:
    """Route one record; its refusal (reason, detail), if any."""
    routes = [(pipeline.topic, pipeline.router, pipeline.partitions)]
    stop, refused = route([FakeMessage(pipeline.topic, partition, offset, value)], 0, now_ms, routes, PartitionProgress)
    assert stop == 1
    return refused[0][1:] if refused else None


def test_views_keyed_alike_share_the_events_and_each_gets_every_event_once() -> None:
    views = _views()
    pipeline = _pipeline(list(views.values()))
    user_tiles, user_sessions = pipeline.tiles["user_activity"], pipeline.sessions["user_session"]
    assert user_tiles.events is user_sessions.events
    assert pipeline.tiles["item_activity"].events is not user_tiles.events
    assert _handle(pipeline, 0, 5, EVENT, NOW_MS) is None
    assert [e[:3] for e in user_sessions.events.fresh((7,), {0: -1})] == [(0, 5, TS_MS)]
    assert pipeline.tiles["item_activity"].events.entities() == [(3,)]


def test_another_udf_does_not_share() -> None:
    views = _views()
    own = dataclasses.replace(views["user_session"], name="raw_sessions", udf=None)
    pipeline = _pipeline([views["user_activity"], own])
    assert pipeline.tiles["user_activity"].events is not pipeline.sessions["raw_sessions"].events


def test_each_micro_batch_gets_new_events() -> None:
    pipeline = _pipeline(list(_views().values()))
    _handle(pipeline, 0, 5, EVENT, NOW_MS)
    tiles, sessions = pipeline.take_batches()
    handed = {id(b.events) for b in (*tiles, *sessions)}
    assert len(handed) == 2  # users (windows and sessions), items
    assert not handed & {id(b.events) for b in (*pipeline.tiles.values(), *pipeline.sessions.values())}
    assert all(len(b.events) == 0 for b in (*pipeline.tiles.values(), *pipeline.sessions.values()))


DERIVE = demo_specs().stream_views["user_activity"].udf
assert DERIVE is not None


def _event(offset_ms: int = 0, user: int = 7) -> bytes:
    return EVENT.replace(b'"user_id":7', b'"user_id":%d' % user).replace(
        b'"2026-11-27T10:00:00.000Z"', b"%d" % (TS_MS + offset_ms))


def _with_udf(udf: object) -> list[StreamViewSpec]:
    return [dataclasses.replace(v, udf=udf) for v in _views().values()]


def _untouched(pipeline: SourcePipeline) -> bool:
    batches = (*pipeline.tiles.values(), *pipeline.sessions.values())
    return all(len(b.events) == 0 for b in batches) and pipeline.router.accepted == 0


def test_a_late_record_is_refused_and_leaves_no_trace(tmp_path: Path) -> None:
    pipeline = SourcePipeline("p", _views()["user_activity"].source, list(_views().values()), tmp_path)
    lateness = pipeline.lateness_ms
    assert _handle(pipeline, 0, 1, _event(), NOW_MS) is None
    refused = _handle(pipeline, 0, 2, _event(-lateness - 1, user=8), NOW_MS)
    assert refused is not None and refused[0] == LATE and "is 1 ms behind the watermark" in refused[1]
    assert _handle(pipeline, 0, 3, _event(-lateness, user=9), NOW_MS) is None  # exactly at the watermark: on time
    assert pipeline.partitions[0] == PartitionProgress(offset=3, max_ts=TS_MS)
    assert sorted(pipeline.tiles["user_activity"].events.entities()) == [(7,), (9,)]
    assert pipeline.event_log is not None and pipeline.event_log.pending == 2
    assert pipeline.router.accepted == 2 and pipeline.newest_ts == TS_MS


@pytest.mark.parametrize(("udf", "detail"), [
    (lambda row: 1 / 0, "ZeroDivisionError: division by zero"),
    (lambda row: {k: v for k, v in DERIVE(row).items() if k != "item_id"}, "no join key `item_id`"),
    (lambda row: {**DERIVE(row), "user_id": None}, "null join key `user_id`"),
    (lambda row: row, "no column `purchase_id`, which a view reads"),
    (lambda row: {**DERIVE(row), "user_id": [row["user_id"]]}, "TypeError: unhashable type: 'list'"),
    (lambda row: None, "TypeError: 'NoneType' object is not subscriptable"),
    (lambda row: [], "TypeError: list indices must be integers"),
    (lambda row: {**DERIVE(row), "purchase_value": "12.5"},
     "column `purchase_value` holds the string \"12.5\", but a view adds it up"),
    (lambda row: {**DERIVE(row), "purchase_value": 2 ** 70}, f"holds {2 ** 70}, which leaves 64 bits"),
    (lambda row: {**DERIVE(row), "viewed_price": Decimal("1.5")}, "column `viewed_price` holds a Decimal"),
    (lambda row: {**DERIVE(row), "price": datetime(2026, 1, 1)}, "column `price` holds a datetime without a timezone"),
])
def test_a_udf_that_fails_refuses_the_record_before_anything_changes(udf: object, detail: str, tmp_path: Path) -> None:
    views = _with_udf(udf)
    pipeline = SourcePipeline("p", views[0].source, views, tmp_path)
    pipeline.partitions[0] = PartitionProgress(max_ts=TS_MS - 5)
    refused = _handle(pipeline, 0, 4, _event(), NOW_MS)
    assert refused is not None and refused[0] == UDF_ERROR and detail in refused[1]
    assert _untouched(pipeline) and pipeline.event_log is not None and pipeline.event_log.pending == 0
    assert pipeline.partitions[0] == PartitionProgress(offset=4, max_ts=TS_MS - 5) and pipeline.newest_ts == 0


def test_a_udf_that_stops_the_process_is_not_a_dead_letter() -> None:
    def interrupted(row: dict[str, object]) -> dict[str, object]:
        raise KeyboardInterrupt

    views = _with_udf(interrupted)
    with pytest.raises(KeyboardInterrupt):
        _handle(_pipeline(views), 0, 1, _event(), NOW_MS)


def test_route_stops_at_a_kafka_error_and_hands_back_the_refused() -> None:
    pipeline = SourcePipeline("p", _views()["user_activity"].source, list(_views().values()), None)
    topic = pipeline.topic
    messages = [FakeMessage(topic, 1, 10, _event()), FakeMessage(topic, 1, 11, b"{oops"), FakeMessage(topic, 2, 5, None),
                FakeMessage(topic, 0, 0, None, error="broker down"), FakeMessage(topic, 2, 6, _event(1, user=8))]
    routes = [(topic, pipeline.router, pipeline.partitions)]
    stop, refused = route(messages, 0, NOW_MS, routes, PartitionProgress)
    assert stop == 3
    assert [(m, reason) for m, reason, _ in refused] == [(messages[1], UNDECODABLE), (messages[2], UNDECODABLE)]
    assert pipeline.partitions == {1: PartitionProgress(offset=11, max_ts=TS_MS), 2: PartitionProgress(offset=5)}
    assert route(messages, stop + 1, NOW_MS, routes, PartitionProgress) == (5, [])
    assert pipeline.partitions[2] == PartitionProgress(offset=6, max_ts=TS_MS + 1)
    assert pipeline.router.accepted == 2 and pipeline.newest_ts == TS_MS + 1
    with pytest.raises(KeyError, match="no pipeline for topic elsewhere"):
        route([FakeMessage("elsewhere", 0, 0, _event())], 0, NOW_MS, routes, PartitionProgress)


def test_route_records_the_progress_it_made_when_it_fails_midway() -> None:
    def failing(row: dict[str, object]) -> dict[str, object]:
        if row["user_id"] == 9:
            raise SystemExit("a bug that must stop the batch")
        return DERIVE(row)

    views = _with_udf(failing)
    pipeline = _pipeline(views)
    topic = pipeline.topic
    messages = [FakeMessage(topic, 0, 1, _event()), FakeMessage(topic, 0, 2, _event(5, user=9)), FakeMessage(topic, 0, 3, _event())]
    with pytest.raises(SystemExit):
        route(messages, 0, NOW_MS, [(topic, pipeline.router, pipeline.partitions)], PartitionProgress)
    assert pipeline.partitions[0] == PartitionProgress(offset=2, max_ts=TS_MS)


def test_the_event_log_keeps_the_record_as_decoded_whatever_a_udf_changes_in_it(tmp_path: Path) -> None:
    def changing(row: dict[str, object]) -> dict[str, object]:
        row["event_type"] = "changed"
        row["price"] = "not a price"
        return DERIVE({**row, "price": 1.0})

    views = _with_udf(changing)
    pipeline = SourcePipeline("p", views[0].source, views, tmp_path)
    assert _handle(pipeline, 0, 1, _event(), NOW_MS) is None
    assert pipeline.event_log is not None
    (file,) = pipeline.event_log.write(pipeline.event_log.take())
    logged = pq.read_table(file).to_pylist()[0]
    assert logged["event_type"] == "view" and logged["price"] == 2.5


def test_route_keeps_each_topic_s_progress_apart() -> None:
    views = _views()
    other = [dataclasses.replace(v, source=dataclasses.replace(v.source, topic="other")) for v in views.values()]
    first, second = _pipeline(list(views.values())), _pipeline(other)
    routes = [(p.topic, p.router, p.partitions) for p in (first, second)]
    messages = [FakeMessage("other", 0, 7, _event(5)), FakeMessage(first.topic, 0, 3, _event()),
                FakeMessage("other", 1, 2, _event(9))]
    assert route(messages, 0, NOW_MS, routes, PartitionProgress) == (3, [])
    assert first.partitions == {0: PartitionProgress(offset=3, max_ts=TS_MS)}
    assert second.partitions == {0: PartitionProgress(offset=7, max_ts=TS_MS + 5),
                                 1: PartitionProgress(offset=2, max_ts=TS_MS + 9)}
    assert (first.router.accepted, second.router.accepted) == (1, 2)
