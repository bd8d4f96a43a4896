"""The synthetic demo data: deterministic, schema-exact, realistic where the features care, broken where asked to be."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurestream.generate import GenerateConfig, GenerateSummary, generate_demo_data

END = datetime(2026, 11, 27, 6, 30, tzinfo=UTC)
LATENESS_MS = 60_000
SESSION_GAP = timedelta(minutes=30)
MIDNIGHTS = [datetime(2026, 11, day, tzinfo=UTC) for day in (25, 26, 27)]
TS_FORMAT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
GOOD_KEYS = {"event_id", "user_id", "item_id", "event_type", "price", "event_timestamp"}
EVENT_TYPES = {"view", "click", "add_to_cart", "purchase"}
MALFORMED_KINDS = {"not_utf8", "not_json", "missing_user_id", "missing_event_timestamp",
                   "wrong_type_user_id", "wrong_type_price", "bad_timestamp", "future_timestamp"}
_TS = pa.timestamp("ms", tz="UTC")


def small_config(out_dir: Path, **overrides: Any) -> GenerateConfig:
    base = GenerateConfig(out_dir=out_dir, end=END, users=2_000, items=200, days=3, events=20_000, event_hours=12.0,
                          seed=7, lateness_ms=LATENESS_MS, out_of_order_fraction=0.05, late_fraction=0.01,
                          malformed_fraction=0.01)
    return replace(base, **overrides)


def classify(line: bytes) -> str | dict[str, Any]:
    """A malformed kind, or the parsed event if the line is a good one (judged without the generator's code)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return "not_utf8"
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return "not_json"
    if "user_id" not in record:
        return "missing_user_id"
    if "event_timestamp" not in record:
        return "missing_event_timestamp"
    if not isinstance(record["user_id"], int):
        return "wrong_type_user_id"
    if not isinstance(record["price"], float):
        return "wrong_type_price"
    if not isinstance(record["event_timestamp"], str) or not TS_FORMAT.fullmatch(record["event_timestamp"]):
        return "bad_timestamp"
    try:
        stamp = datetime.fromisoformat(record["event_timestamp"])
    except ValueError:
        return "bad_timestamp"
    if stamp > END + timedelta(days=365):
        return "future_timestamp"
    return record


def epoch_ms(stamp: str) -> int:
    return (datetime.fromisoformat(stamp) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


class Generated:
    """One small data set, read back: good events in arrival order and malformed lines by kind."""

    def __init__(self, config: GenerateConfig, summary: GenerateSummary, progress: list[tuple[int, int]]) -> None:
        self.config, self.summary, self.progress = config, summary, progress
        self.raw = summary.events_path.read_bytes()
        self.good: list[dict[str, Any]] = []
        self.malformed: dict[str, int] = defaultdict(int)
        for line in self.raw.split(b"\n")[:-1]:
            kind = classify(line)
            if isinstance(kind, str):
                self.malformed[kind] += 1
            else:
                self.good.append(kind)
        self.users = pq.read_table(summary.user_profile_path)
        self.items = pq.read_table(summary.item_stats_path)

    def events_frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.good)
        frame["ts_ms"] = [epoch_ms(s) for s in frame["event_timestamp"]]
        return frame


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    config = small_config(tmp_path_factory.mktemp("demo"))
    calls: list[tuple[int, int]] = []
    summary = generate_demo_data(config, progress=lambda done, total: calls.append((done, total)))
    return Generated(config, summary, calls)


def latest_rows(table: pa.Table, key: str) -> pd.DataFrame:
    """The row Feast would serve per (entity, snapshot): the newest created_ts wins."""
    frame = table.to_pandas().sort_values([key, "snapshot_ts", "created_ts"])
    return frame.groupby([key, "snapshot_ts"], as_index=False).tail(1).reset_index(drop=True)


def file_bytes(summary: GenerateSummary) -> list[bytes]:
    return [p.read_bytes() for p in (summary.user_profile_path, summary.item_stats_path, summary.events_path)]


def test_same_seed_gives_identical_files_and_another_seed_different_ones(tmp_path: Path) -> None:
    first = generate_demo_data(small_config(tmp_path / "a", events=3_000, malformed_fraction=0.02))
    again = generate_demo_data(small_config(tmp_path / "b", events=3_000, malformed_fraction=0.02))
    other = generate_demo_data(small_config(tmp_path / "c", events=3_000, malformed_fraction=0.02, seed=8))
    assert file_bytes(first) == file_bytes(again)
    for mine, theirs in zip(file_bytes(first), file_bytes(other), strict=True):
        assert mine != theirs
    assert replace(first, user_profile_path=again.user_profile_path, item_stats_path=again.item_stats_path,
                   events_path=again.events_path) == again


def test_rewriting_overwrites_the_previous_files(tmp_path: Path) -> None:
    generate_demo_data(small_config(tmp_path, events=4_000))
    summary = generate_demo_data(small_config(tmp_path, events=1_000, malformed_fraction=0.0))
    assert summary.events_path.read_bytes().count(b"\n") == 1_000
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [
        "clicks.jsonl", "item_stats.parquet", "user_profile.parquet"]


def test_every_good_line_matches_the_click_schema(generated: Generated) -> None:
    start = END - timedelta(hours=generated.config.event_hours)
    assert generated.raw.endswith(b"\n")
    for event in generated.good:
        assert set(event) == GOOD_KEYS
        assert isinstance(event["event_id"], str)
        assert type(event["user_id"]) is int and 1 <= event["user_id"] <= generated.config.users
        assert type(event["item_id"]) is int and 1 <= event["item_id"] <= generated.config.items
        assert event["event_type"] in EVENT_TYPES
        assert type(event["price"]) is float and event["price"] > 0 and round(event["price"], 2) == event["price"]
        assert start <= datetime.fromisoformat(event["event_timestamp"]) < END
    assert len({event["event_id"] for event in generated.good}) == len(generated.good)
    assert {event["event_type"] for event in generated.good} == EVENT_TYPES


def test_summary_counts_match_the_files(generated: Generated) -> None:
    summary, frame = generated.summary, generated.events_frame()
    assert summary.events == len(generated.good) == generated.config.events
    assert summary.malformed == sum(generated.malformed.values())
    total_lines = summary.events + summary.malformed
    assert summary.malformed == round(generated.config.malformed_fraction * total_lines)
    assert summary.first_event == datetime.fromtimestamp(frame["ts_ms"].min() / 1000, UTC)
    assert summary.last_event == datetime.fromtimestamp(frame["ts_ms"].max() / 1000, UTC)
    assert summary.snapshot_rows_user == generated.users.num_rows
    assert summary.snapshot_rows_item == generated.items.num_rows
    assert (summary.users, summary.items) == (generated.config.users, generated.config.items)
    assert generated.progress[-1] == (summary.events, summary.events)
    assert all(done <= total for done, total in generated.progress)


def test_every_malformed_kind_is_present(generated: Generated) -> None:
    assert set(generated.malformed) == MALFORMED_KINDS
    lines = generated.raw.split(b"\n")[:-1]
    assert all(line and b"\r" not in line for line in lines)


def test_no_malformed_lines_unless_asked(tmp_path: Path) -> None:
    summary = generate_demo_data(small_config(tmp_path, events=2_000, malformed_fraction=0.0))
    lines = summary.events_path.read_bytes().split(b"\n")[:-1]
    assert summary.malformed == 0 and len(lines) == 2_000
    assert all(isinstance(classify(line), dict) for line in lines)


def test_delayed_events_stay_inside_or_far_beyond_the_lateness(generated: Generated) -> None:
    newest = -1
    lags: list[int] = []
    for event in generated.good:
        ts = epoch_ms(event["event_timestamp"])
        lags.append(newest - ts)
        newest = max(newest, ts)
    lag = np.array(lags)
    out_of_order = (lag > 0) & (lag < LATENESS_MS / 2)
    late = lag > 5 * LATENESS_MS
    assert not ((lag > 0) & ~out_of_order & ~late).any(), "a delay between lateness/2 and 5 x lateness"
    assert out_of_order.sum() == generated.summary.out_of_order
    assert late.sum() == generated.summary.late
    n = generated.config.events
    assert 0.9 * generated.config.out_of_order_fraction * n <= out_of_order.sum() <= generated.config.out_of_order_fraction * n
    assert 0.9 * generated.config.late_fraction * n <= late.sum() <= generated.config.late_fraction * n


def test_purchases_follow_a_view_of_the_same_item_in_the_same_session(generated: Generated) -> None:
    frame = generated.events_frame().sort_values(["user_id", "ts_ms"], kind="stable")
    new_session = (frame["user_id"].diff() != 0) | (frame["ts_ms"].diff() > SESSION_GAP / timedelta(milliseconds=1))
    frame["session"] = new_session.cumsum()
    viewed: dict[tuple[int, int], int] = {}
    purchases = 0
    for session, item, kind, ts in frame[["session", "item_id", "event_type", "ts_ms"]].itertuples(index=False):
        if kind == "view":
            viewed.setdefault((session, item), ts)
        elif kind == "purchase":
            purchases += 1
            assert viewed.get((session, item), ts) < ts, f"purchase of {item} at {ts} without an earlier view"
    assert purchases > 0


def test_sessions_are_separated_by_well_over_30_minutes(generated: Generated) -> None:
    frame = generated.events_frame().sort_values(["user_id", "ts_ms"])
    same_user = frame["user_id"].diff() == 0
    gaps = frame["ts_ms"].diff()[same_user]
    inside = gaps <= 4 * 60_000
    assert (gaps[inside] >= 1_000).all()
    assert (gaps[~inside] > 40 * 60_000).all()
    assert (~inside).sum() > 0 and frame.groupby("user_id").size().max() > 20


def test_popularity_is_skewed_and_traffic_bursty(generated: Generated) -> None:
    frame = generated.events_frame()
    views = frame[frame["event_type"] == "view"]["item_id"].value_counts()
    top_tenth = views.iloc[: generated.config.items // 10].sum() / views.sum()
    assert top_tenth > 0.3
    per_user = frame["user_id"].value_counts()
    assert per_user.iloc[0] > 3 * per_user.median()
    per_minute = np.bincount((frame["ts_ms"] - frame["ts_ms"].min()) // 60_000)
    assert per_minute.max() > 3 * np.median(per_minute)


def test_event_prices_are_the_items_snapshot_prices(generated: Generated) -> None:
    prices = latest_rows(generated.items, "item_id")
    prices["snapshot_ms"] = (prices["snapshot_ts"] - pd.Timestamp(0, tz=UTC)) // pd.Timedelta(milliseconds=1)
    lookup = {(row.item_id, row.snapshot_ms): row.price for row in prices.itertuples()}
    day_ms = 86_400_000
    for event in generated.good:
        ts = epoch_ms(event["event_timestamp"])
        assert lookup[(event["item_id"], ts // day_ms * day_ms)] == event["price"]


def test_parquet_schemas_are_exact(generated: Generated) -> None:
    assert generated.users.schema.remove_metadata() == pa.schema([
        ("user_id", pa.int64()), ("snapshot_ts", _TS), ("created_ts", _TS), ("account_age_days", pa.int64()),
        ("country", pa.string()), ("lifetime_orders", pa.int64()), ("lifetime_spend", pa.float64())])
    assert generated.items.schema.remove_metadata() == pa.schema([
        ("item_id", pa.int64()), ("snapshot_ts", _TS), ("created_ts", _TS), ("price", pa.float64()),
        ("category", pa.string()), ("popularity_7d", pa.int64())])


@pytest.mark.parametrize(("table", "key", "entities"), [("users", "user_id", 2_000), ("items", "item_id", 200)])
def test_snapshots_are_daily_midnights_published_minutes_later(generated: Generated, table: str, key: str,
                                                                entities: int) -> None:
    rows = latest_rows(getattr(generated, table), key)
    assert sorted(rows["snapshot_ts"].unique()) == [pd.Timestamp(day) for day in MIDNIGHTS]
    assert len(rows) == entities * len(MIDNIGHTS)
    assert sorted(rows[key].unique()) == list(range(1, entities + 1))
    first = getattr(generated, table).to_pandas().groupby([key, "snapshot_ts"])["created_ts"].min()
    delay = first - first.index.get_level_values("snapshot_ts")
    assert (delay > pd.Timedelta(0)).all() and (delay < pd.Timedelta(minutes=15)).all()


def test_user_profiles_evolve_plausibly(generated: Generated) -> None:
    rows = latest_rows(generated.users, "user_id")
    by_user = rows.groupby("user_id")
    assert (by_user["account_age_days"].diff().dropna() == 1).all()
    assert (by_user["lifetime_orders"].diff().dropna() >= 0).all()
    assert (by_user["lifetime_spend"].diff().dropna() >= 0).all()
    assert (by_user["country"].nunique() == 1).all()
    assert (rows["lifetime_spend"].round(2) == rows["lifetime_spend"]).all()
    assert by_user["lifetime_orders"].last().sum() > by_user["lifetime_orders"].first().sum()


def test_item_stats_look_like_a_catalogue(generated: Generated) -> None:
    rows = latest_rows(generated.items, "item_id")
    assert (rows["price"] > 0).all() and (rows["price"].round(2) == rows["price"]).all()
    assert 6 <= rows["category"].nunique() <= 12
    assert (rows.groupby("item_id")["category"].nunique() == 1).all()
    assert (rows["popularity_7d"] >= 0).all() and rows["popularity_7d"].max() > 10 * rows["popularity_7d"].median()


@pytest.mark.parametrize(("table", "key", "values"), [
    ("users", "user_id", ["lifetime_orders", "lifetime_spend"]),
    ("items", "item_id", ["price", "popularity_7d"]),
])
def test_corrections_republish_a_snapshot_later_with_other_values(generated: Generated, table: str, key: str,
                                                                   values: list[str]) -> None:
    frame = getattr(generated, table).to_pandas()
    groups = [group.sort_values("created_ts") for _, group in frame.groupby([key, "snapshot_ts"]) if len(group) > 1]
    assert groups
    for group in groups:
        assert len(group) == 2
        wrong, fixed = group.iloc[0], group.iloc[1]
        assert fixed["created_ts"] - wrong["created_ts"] > pd.Timedelta(minutes=30)
        assert all(wrong[column] != fixed[column] for column in values)


def test_rejects_impossible_configs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timezone"):
        small_config(tmp_path, end=END.replace(tzinfo=None))
    with pytest.raises(ValueError, match="malformed_fraction"):
        small_config(tmp_path, malformed_fraction=1.0)
    with pytest.raises(ValueError, match="users"):
        small_config(tmp_path, users=0)
