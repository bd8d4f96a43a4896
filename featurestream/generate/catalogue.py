"""Users and items as events and snapshots both see them: who is popular and what things cost on each day."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DAY_MS = 86_400_000
CATEGORIES = ("electronics", "books", "home", "kitchen", "toys", "sports",
              "beauty", "fashion", "garden", "grocery", "automotive", "pets")
_CATEGORY_SHARE = np.array([12, 14, 10, 8, 7, 8, 9, 12, 5, 6, 4, 5], dtype=float) / 100
_CATEGORY_MEDIAN_CENTS = np.array([15_000, 1_500, 4_500, 3_500, 2_500, 5_000,
                                   2_000, 4_000, 3_000, 800, 6_000, 2_200], dtype=float)
_USER_SKEW = 0.9      # Zipf exponents: a few heavy shoppers and best-sellers, a long tail
_ITEM_SKEW = 0.8
_PRICE_CHANGE_PER_DAY = 0.04   # share of items repriced each day (sales, markups)


@dataclass(frozen=True)
class Catalogue:
    snapshot_ms: np.ndarray     # int64 epoch ms of each daily 00:00 UTC snapshot, ascending
    user_weight: np.ndarray     # share of shopping sessions; index user_id - 1
    item_weight: np.ndarray     # share of item views; index item_id - 1
    item_category: np.ndarray   # index into CATEGORIES
    price_cents: np.ndarray     # [snapshot, item]: the price from that snapshot until the next

    def price_at(self, ts_ms: np.ndarray, item_id: np.ndarray) -> np.ndarray:
        """An event's price is the item's price in the snapshot in force at the event's time."""
        day = np.maximum(np.searchsorted(self.snapshot_ms, ts_ms, side="right") - 1, 0)
        return self.price_cents[day, item_id - 1] / 100


def snapshot_times(end_ms: int, days: int) -> np.ndarray:
    """Midnights strictly before `end`, newest last, so no snapshot is dated at or after the data's end."""
    last = (end_ms - 1) // DAY_MS * DAY_MS
    return last - DAY_MS * np.arange(days - 1, -1, -1, dtype=np.int64)


def zipf_weights(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Zipf-like shares over ids in random rank order, so popularity does not follow id order."""
    ranks = rng.permutation(n) + 1
    weights = ranks.astype(float) ** -exponent
    return weights / weights.sum()


def build_catalogue(rng: np.random.Generator, users: int, items: int, snapshot_ms: np.ndarray) -> Catalogue:
    category = rng.choice(len(CATEGORIES), size=items, p=_CATEGORY_SHARE)
    base = rng.lognormal(np.log(_CATEGORY_MEDIAN_CENTS[category]), 0.5)
    base = np.maximum(base // 100 * 100 + 99, 99).astype(np.int64)   # shop prices end in .99
    prices = np.empty((len(snapshot_ms), items), dtype=np.int64)
    prices[0] = base
    for day in range(1, len(snapshot_ms)):
        change = rng.random(items) < _PRICE_CHANGE_PER_DAY
        factor = np.where(change, rng.uniform(0.75, 1.1, items), 1.0)
        prices[day] = np.maximum(np.round(prices[day - 1] * factor), 99).astype(np.int64)
    return Catalogue(
        snapshot_ms=snapshot_ms,
        user_weight=zipf_weights(rng, users, _USER_SKEW),
        item_weight=zipf_weights(rng, items, _ITEM_SKEW),
        item_category=category,
        price_cents=prices,
    )
