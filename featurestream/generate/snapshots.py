"""The daily batch tables (user_profile, item_stats), including late corrections that test created-ts tie-breaks."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from featurestream.generate.catalogue import CATEGORIES, Catalogue

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
CORRECTION_FRACTION = 0.005    # rows first published wrong and republished hours later
COUNTRIES = ("US", "GB", "DE", "FR", "IN", "BR", "JP", "CA", "AU", "ES", "IT", "NL")
_COUNTRY_SHARE = np.array([30, 10, 9, 7, 12, 8, 6, 5, 4, 3, 3, 3], dtype=float) / 100

_TS = pa.timestamp("ms", tz="UTC")
USER_PROFILE_SCHEMA = pa.schema([
    ("user_id", pa.int64()), ("snapshot_ts", _TS), ("created_ts", _TS), ("account_age_days", pa.int64()),
    ("country", pa.string()), ("lifetime_orders", pa.int64()), ("lifetime_spend", pa.float64()),
])
ITEM_STATS_SCHEMA = pa.schema([
    ("item_id", pa.int64()), ("snapshot_ts", _TS), ("created_ts", _TS), ("price", pa.float64()),
    ("category", pa.string()), ("popularity_7d", pa.int64()),
])

Columns = dict[str, np.ndarray]


def _daily_rows(rng: np.random.Generator, snapshot_ms: np.ndarray, n: int) -> Columns:
    """Entity ids 1..n and snapshot times, day-major; each row published a few minutes after its snapshot."""
    snapshot = np.repeat(snapshot_ms, n)
    return {
        "id": np.tile(np.arange(1, n + 1, dtype=np.int64), len(snapshot_ms)),
        "snapshot_ts": snapshot,
        "created_ts": snapshot + rng.integers(2 * MINUTE_MS, 15 * MINUTE_MS, len(snapshot)),
    }


def _with_corrections(rng: np.random.Generator, rows: Columns, wrong_values: Callable[[Columns], Columns]) -> Columns:
    """Pick rows that were first published wrong: the wrong row keeps the early created_ts, the true one comes hours later."""
    n = len(rows["id"])
    picked = np.sort(rng.choice(n, size=max(1, round(CORRECTION_FRACTION * n)), replace=False))
    wrong = {name: column[picked] for name, column in rows.items()}
    wrong.update(wrong_values(wrong))
    created = rows["created_ts"].copy()
    created[picked] = rows["snapshot_ts"][picked] + rng.integers(HOUR_MS, 6 * HOUR_MS, len(picked))
    merged = {name: np.concatenate([created if name == "created_ts" else column, wrong[name]])
              for name, column in rows.items()}
    order = np.lexsort((merged["created_ts"], merged["id"], merged["snapshot_ts"]))
    return {name: column[order] for name, column in merged.items()}


def user_profile_table(rng: np.random.Generator, catalogue: Catalogue) -> pa.Table:
    """Accounts age a day per snapshot; orders and spend only grow, faster for users who shop more."""
    users, days = len(catalogue.user_weight), len(catalogue.snapshot_ms)
    rows = _daily_rows(rng, catalogue.snapshot_ms, users)
    age0 = np.minimum(rng.lognormal(np.log(300), 1.0, users), 3650).astype(np.int64)
    country = rng.choice(len(COUNTRIES), size=users, p=_COUNTRY_SHARE)
    orders_per_day = 0.02 * np.sqrt(catalogue.user_weight * users) * rng.lognormal(0, 0.5, users)
    basket_cents = rng.lognormal(np.log(4_500), 0.6, users)
    orders0 = rng.poisson(orders_per_day * age0 * 0.8)
    new_orders = rng.poisson(orders_per_day, (days, users))
    new_orders[0] = 0
    spend0 = np.round(orders0 * basket_cents * rng.uniform(0.8, 1.2, users)).astype(np.int64)
    new_spend = np.round(new_orders * basket_cents * rng.uniform(0.7, 1.3, (days, users))).astype(np.int64)
    rows.update({
        "account_age_days": (age0 + np.arange(days)[:, None]).ravel(),
        "country": np.tile(country, days),
        "lifetime_orders": (orders0 + np.cumsum(new_orders, axis=0)).ravel(),
        "spend_cents": (spend0 + np.cumsum(new_spend, axis=0)).ravel(),
    })

    def wrong_values(wrong: Columns) -> Columns:
        k = len(wrong["id"])
        return {"lifetime_orders": wrong["lifetime_orders"] + rng.integers(1, 6, k),
                "spend_cents": np.round(wrong["spend_cents"] * rng.uniform(1.1, 1.5, k)).astype(np.int64) + 100}

    rows = _with_corrections(rng, rows, wrong_values)
    return pa.Table.from_arrays([
        pa.array(rows["id"]), pa.array(rows["snapshot_ts"], _TS), pa.array(rows["created_ts"], _TS),
        pa.array(rows["account_age_days"]), pa.array(np.array(COUNTRIES, dtype=object)[rows["country"]], pa.string()),
        pa.array(rows["lifetime_orders"]), pa.array(rows["spend_cents"] / 100),
    ], schema=USER_PROFILE_SCHEMA)


def item_stats_table(rng: np.random.Generator, catalogue: Catalogue, views_per_day: float) -> pa.Table:
    """Prices as the catalogue has them; popularity_7d sums the item's daily views over the 7 days before."""
    items, days = len(catalogue.item_weight), len(catalogue.snapshot_ms)
    rows = _daily_rows(rng, catalogue.snapshot_ms, items)
    daily_views = rng.poisson(catalogue.item_weight * views_per_day, (days + 7, items))
    window = np.cumsum(np.vstack([np.zeros((1, items), dtype=np.int64), daily_views]), axis=0)
    rows.update({
        "price_cents": catalogue.price_cents.ravel(),
        "category": np.tile(catalogue.item_category, days),
        "popularity_7d": (window[7:days + 7] - window[0:days]).ravel(),
    })

    def wrong_values(wrong: Columns) -> Columns:
        k = len(wrong["id"])
        return {"price_cents": np.round(wrong["price_cents"] * rng.uniform(1.2, 2.0, k)).astype(np.int64) + 1,
                "popularity_7d": wrong["popularity_7d"] + rng.integers(1, 50, k)}

    rows = _with_corrections(rng, rows, wrong_values)
    return pa.Table.from_arrays([
        pa.array(rows["id"]), pa.array(rows["snapshot_ts"], _TS), pa.array(rows["created_ts"], _TS),
        pa.array(rows["price_cents"] / 100), pa.array(np.array(CATEGORIES, dtype=object)[rows["category"]], pa.string()),
        pa.array(rows["popularity_7d"]),
    ], schema=ITEM_STATS_SCHEMA)


def write_parquet(table: pa.Table, path: Path) -> None:
    """Fixed options and an atomic rename: identical bytes for identical tables, never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    pq.write_table(table, partial, compression="zstd", row_group_size=1 << 20)
    os.replace(partial, path)
