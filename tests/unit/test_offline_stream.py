"""Windowed and session features of the training export, judged by the brute-force reference over the same events."""

from __future__ import annotations

import dataclasses
import importlib
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from featurestream.definitions import AggregationSpec, RepoSpecs, StreamViewSpec
from featurestream.offline import OfflineError, export
from materializers.stream.event_log import EventLogWriter
from tests.reference import agrees
from tests.streams import (
    HOUR, MINUTE, START, demo_specs, epoch_ms, expected_features, price_stats_view, random_stream, reference_events,
)


def specs_with_log(event_log: Path) -> RepoSpecs:
    """The demo specs reading `event_log`, plus a view using every other aggregation function."""
    demo = demo_specs()
    views = {}
    for name, view in demo.stream_views.items():
        views[name] = dataclasses.replace(view, source=dataclasses.replace(view.source, event_log_path=str(event_log)))
    views["price_stats"] = price_stats_view(views["user_activity"])
    return dataclasses.replace(demo, stream_views=views)


def write_log(events: list[dict[str, Any]], rng: random.Random, directory: Path, view: StreamViewSpec,
              partitions: int = 3) -> list[dict[str, Any]]:
    """Place events on partitions as Kafka would, keep what the materializer accepts, write it as its event log."""
    offsets = [0] * partitions
    placements = []
    for _ in events:
        partition = rng.randrange(partitions)
        placements.append((partition, offsets[partition]))
        offsets[partition] += 1
    accepted, _ = reference_events(events, placements, view.source.lateness_ms)
    kept = {(e["partition"], e["offset"]) for e in accepted}
    writer = EventLogWriter(view.source, directory)
    for event, (partition, offset) in zip(events, placements, strict=True):
        if (partition, offset) in kept:
            ts = epoch_ms(event["event_timestamp"])
            writer.buffers.append(partition, offset, {**event, "event_timestamp": datetime.fromtimestamp(ts / 1000, UTC)}, ts)
        if rng.random() < 0.01:
            writer.write(writer.take())
    writer.write(writer.take())
    return accepted


def probe_times(rng: random.Random, accepted: list[dict[str, Any]], n: int) -> list[int]:
    """Random times, exact event times, tile edges and their neighbours, before the first and long after the last."""
    first, last = min(e["ts"] for e in accepted), max(e["ts"] for e in accepted)
    times = [first - 1, last + 31 * MINUTE, last + 25 * HOUR]
    for _ in range(n):
        roll = rng.random()
        if roll < 0.3:
            times.append(rng.choice(accepted)["ts"])
        elif roll < 0.6:
            edge = rng.randint(first, last) // (5 * MINUTE) * (5 * MINUTE)
            times.append(edge + rng.choice([-1, 0, 1]))
        else:
            times.append(rng.randint(first - HOUR, last + HOUR))
    return times


@pytest.mark.parametrize(("seed", "chunk_rows"), [(1, None), (2, None), (3, 97)])
def test_windows_and_sessions_equal_the_reference(seed: int, chunk_rows: int | None, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Entity rows go through in chunks: one run with small ones, so every chunk boundary is crossed."""
    if chunk_rows is not None:
        monkeypatch.setattr(importlib.import_module("featurestream.offline.export"), "CHUNK_ROWS", chunk_rows)
    rng = random.Random(seed)
    specs = specs_with_log(tmp_path / "log")
    activity = specs.stream_views["user_activity"]
    events = random_stream(rng, 1500, users=8, items=5, start_ms=START, span_ms=6 * HOUR,
                           lateness_ms=activity.source.lateness_ms)
    # Equal event times across partitions: ties that `last` must break by (partition, offset).
    for i in range(0, len(events) - 1, 17):
        events[i + 1]["event_timestamp"] = events[i]["event_timestamp"]
        if i % 2:
            events[i + 1]["user_id"] = events[i]["user_id"]
    accepted = write_log(events, rng, tmp_path / "log", activity)
    rows = [(rng.randint(1, 9), rng.randint(1, 6), t) for t in probe_times(rng, accepted, 400)]
    entity = pa.table({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                       "event_timestamp": pa.array([r[2] for r in rows], pa.timestamp("ms", tz="UTC"))})
    views = [v for v in specs.stream_views.values()]
    refs = [f"{v.name}:{f}" for v in views for f in v.feature_names]
    result = export(specs, entity, features=refs, full_feature_names=True).to_pylist()
    magnitude = 500.0
    problems = []
    for (user, item, t), got in zip(rows, result, strict=True):
        for view in views:
            key = (user,) if view.join_keys == ("user_id",) else (item,)
            expected = expected_features(view, accepted, key, t)
            functions = {a.name: a.function for a in view.aggregations}
            for name, want in expected.items():
                value = got[f"{view.name}__{name}"]
                if name == "session_start" and value is not None:
                    value = int(value.timestamp() * 1000)
                if not agrees(functions.get(name, "count"), value, want, magnitude):
                    problems.append((view.name, key, t, name, value, want))
    assert problems == []
    assert any(r["user_session__session_event_count"] for r in result)
    assert any(r["price_stats__price_var_1h"] for r in result)


def test_no_event_log_gives_empty_values(tmp_path: Path) -> None:
    specs = specs_with_log(tmp_path / "nothing")
    entity = pa.table({"user_id": [1], "event_timestamp": pa.array([START], pa.timestamp("ms", tz="UTC"))})
    row = export(specs, entity, features=["user_activity:events_1h", "user_activity:purchase_value_24h",
                                          "user_activity:last_item_id", "user_session:session_event_count",
                                          "user_session:session_start"]).to_pylist()[0]
    assert row == {"user_id": 1, "event_timestamp": row["event_timestamp"], "events_1h": 0,
                   "purchase_value_24h": 0.0, "last_item_id": None, "session_event_count": 0, "session_start": None}


def test_clear_errors(tmp_path: Path) -> None:
    specs = specs_with_log(tmp_path / "log")
    entity = pa.table({"user_id": [1], "event_timestamp": pa.array([START], pa.timestamp("ms", tz="UTC"))})
    with pytest.raises(OfflineError, match="no column item_id"):
        export(specs, entity, features=["item_activity:views_5m"])
    with pytest.raises(OfflineError, match="has no feature 'nope'"):
        export(specs, entity, features=["user_activity:nope"])
    with pytest.raises(OfflineError, match="unknown feature view 'ghost'"):
        export(specs, entity, features=["ghost:x"])
    with pytest.raises(OfflineError, match="unknown feature service"):
        export(specs, entity, feature_service="ghost")
    with pytest.raises(OfflineError, match="timestamp column"):
        export(specs, pa.table({"user_id": [1]}), features=["user_activity:events_1h"])
    copy = dataclasses.replace(specs.stream_views["user_activity"], name="activity_copy")
    twice = dataclasses.replace(specs, stream_views={**specs.stream_views, "activity_copy": copy})
    with pytest.raises(OfflineError, match="more than one view"):
        export(twice, entity, features=["user_activity:events_1h", "activity_copy:events_1h"])
    bad = tmp_path / "entities.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(OfflineError, match="cannot read the entity rows"):
        export(specs, bad, features=["user_activity:events_1h"])
    with pytest.raises(OfflineError, match="does not exist"):
        export(specs, tmp_path / "missing.csv", features=["user_activity:events_1h"])


def test_no_entity_rows_give_an_empty_table_with_every_column(tmp_path: Path) -> None:
    specs = specs_with_log(tmp_path / "nothing")
    entity = pa.table({"user_id": pa.array([], pa.int64()), "event_timestamp": pa.array([], pa.timestamp("ms", tz="UTC"))})
    table = export(specs, entity, features=["user_activity:events_1h", "user_session:session_start"])
    assert table.num_rows == 0
    assert table.column_names == ["user_id", "event_timestamp", "events_1h", "session_start"]


def test_a_min_or_max_of_a_timestamp_column_is_a_timestamp(tmp_path: Path) -> None:
    """As online, where tiles and session states keep datetimes."""
    specs = specs_with_log(tmp_path / "log")
    activity = specs.stream_views["user_activity"]
    times = dataclasses.replace(
        activity, name="times", aggregations=(AggregationSpec("first_1h", "event_timestamp", "min", HOUR, MINUTE),
                                              AggregationSpec("latest_1h", "event_timestamp", "max", HOUR, MINUTE)),
        feature_types={"first_1h": "UnixTimestamp", "latest_1h": "UnixTimestamp"})
    specs = dataclasses.replace(specs, stream_views={**specs.stream_views, "times": times})
    rng = random.Random(4)
    events = random_stream(rng, 300, users=3, items=2, start_ms=START, span_ms=3 * HOUR,
                           lateness_ms=activity.source.lateness_ms)
    accepted = write_log(events, rng, tmp_path / "log", activity)
    rows = [(rng.randint(1, 3), t) for t in probe_times(rng, accepted, 60)]
    entity = pa.table({"user_id": [r[0] for r in rows],
                       "event_timestamp": pa.array([r[1] for r in rows], pa.timestamp("ms", tz="UTC"))})
    result = export(specs, entity, features=["times:first_1h", "times:latest_1h"]).to_pylist()
    for (user, t), got in zip(rows, result, strict=True):
        floor = t - t % MINUTE
        seen = [e["ts"] for e in accepted if e["user_id"] == user and floor - HOUR + MINUTE <= e["ts"] <= t]
        want = (datetime.fromtimestamp(min(seen) / 1000, UTC), datetime.fromtimestamp(max(seen) / 1000, UTC)) \
            if seen else (None, None)
        assert (got["first_1h"], got["latest_1h"]) == want, (user, t)
    assert any(got["first_1h"] is not None for got in result)
