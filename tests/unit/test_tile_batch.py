"""What a micro-batch asks TILE_MERGE to write: no tile the same call would prune."""

from __future__ import annotations

from typing import Any

from featurestream.definitions import check_repo
from featurestream.online.keys import parse_tile_field
from featurestream.online.series import series_retention_ms
from materializers.stream.tile_batch import TileBatch
from tests.conftest import FEATURE_REPO

MINUTE, HOUR = 60_000, 3_600_000
NEWEST = 1_790_000_000_000 - 1_790_000_000_000 % HOUR + 30 * MINUTE


def _row(ts_ms: int) -> dict[str, Any]:
    return {"user_id": 7, "event_id": f"e{ts_ms}", "item_id": 3, "price": 2.5, "event_type": "purchase",
            "purchase_value": 2.5, "viewed_price": None, "view_id": None, "purchase_id": f"e{ts_ms}"}


def _written_tiles(times: list[int]) -> set[tuple[str, int]]:
    view = check_repo(FEATURE_REPO).stream_views["user_activity"]
    batch = TileBatch("p", view)
    for offset, ts in enumerate(times):
        batch.add((7,), 0, offset, ts, _row(ts))
    [(_, update, _)] = batch.calls()
    fields = {parse_tile_field(x) for x in update if isinstance(x, str)}
    return {(f"{f[0]}|{f[1]}", f[2]) for f in fields if f is not None}


def test_tiles_that_left_every_window_by_the_keys_newest_event_are_not_written() -> None:
    view = check_repo(FEATURE_REPO).stream_views["user_activity"]
    span = series_retention_ms(view)["event_id|60000"] + MINUTE  # what TILE_MERGE keeps of a minute tile
    dead = NEWEST - span  # a tile starting here is pruned by the call that writes NEWEST
    tiles = _written_tiles([dead, dead + MINUTE, NEWEST])
    assert ("event_id|60000", dead) not in tiles
    assert ("event_id|60000", dead + MINUTE) in tiles
    assert ("event_id|60000", NEWEST) in tiles
    # The same events' hourly tiles live a day: all are written.
    hour = dead - dead % HOUR
    assert {("event_id|3600000", hour), ("event_id|3600000", NEWEST - NEWEST % HOUR)} <= tiles


def test_a_key_whose_events_are_all_recent_writes_every_tile() -> None:
    times = [NEWEST - 30 * MINUTE, NEWEST - 5 * MINUTE, NEWEST]
    tiles = _written_tiles(times)
    assert {("event_id|60000", t - t % MINUTE) for t in times} <= tiles
    assert {("purchase_value|60000", t - t % MINUTE) for t in times} <= tiles
