"""`generate_demo_data`: catalogue, batch tables, clicks, arrival order, damage, files, each part on its own seeded stream."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from featurestream.generate.arrival import arrival_order
from featurestream.generate.catalogue import build_catalogue, snapshot_times
from featurestream.generate.clickstream import EVENT_TYPES, generate_clicks
from featurestream.generate.config import GenerateConfig, GenerateSummary
from featurestream.generate.malformed import malformed_count, malformed_records
from featurestream.generate.snapshots import item_stats_table, user_profile_table, write_parquet
from featurestream.generate.writer import event_lines, iso_ms, write_lines

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_VIEW_SHARE = 0.7   # of events, to scale popularity_7d to the clickstream's volume


def generate_demo_data(config: GenerateConfig,
                       progress: Callable[[int, int], None] | None = None) -> GenerateSummary:
    """Write user_profile.parquet, item_stats.parquet and events/clicks.jsonl under config.out_dir.

    Nothing reads the clock: `end` and `seed` alone decide every byte. `progress(done, total)` counts good events written.
    """
    # Separate streams, so that e.g. asking for malformed lines leaves the good events as they were.
    streams = np.random.SeedSequence(config.seed).spawn(6)
    catalogue_rng, users_rng, items_rng, clicks_rng, arrival_rng, damage_rng = (
        np.random.Generator(np.random.PCG64(stream)) for stream in streams)
    if progress is not None:
        progress(0, config.events)
    end_ms = (config.end - _EPOCH) // _MS
    start_ms = end_ms - round(config.event_hours * 3_600_000)

    catalogue = build_catalogue(catalogue_rng, config.users, config.items, snapshot_times(end_ms, config.days))
    user_table = user_profile_table(users_rng, catalogue)
    item_table = item_stats_table(items_rng, catalogue, config.events * _VIEW_SHARE * 24 / config.event_hours)
    clicks = generate_clicks(clicks_rng, config.events, start_ms, end_ms, catalogue.user_weight, catalogue.item_weight)
    price = catalogue.price_at(clicks.ts_ms, clicks.item_id)
    arrival = arrival_order(arrival_rng, clicks.ts_ms, config.lateness_ms,
                            config.out_of_order_fraction, config.late_fraction)

    n_good = len(clicks.ts_ms)
    n_bad = malformed_count(n_good, config.malformed_fraction)
    is_malformed = np.zeros(n_good + n_bad, dtype=bool)
    is_malformed[damage_rng.choice(n_good + n_bad, size=n_bad, replace=False)] = True
    # Each malformed line is a damaged copy of the good event at its place in arrival order.
    neighbour = arrival.order[np.minimum(np.flatnonzero(is_malformed) - np.arange(n_bad), n_good - 1)]
    like: list[dict[str, Any]] = [
        {"event_id": "", "user_id": u, "item_id": i, "event_type": EVENT_TYPES[t], "price": p, "event_timestamp": s}
        for u, i, t, p, s in zip(clicks.user_id[neighbour].tolist(), clicks.item_id[neighbour].tolist(),
                                 clicks.event_type[neighbour].tolist(), price[neighbour].tolist(),
                                 iso_ms(clicks.ts_ms[neighbour]), strict=True)
    ]
    bad_lines = malformed_records(damage_rng, n_bad, like, iso_ms, end_ms)

    def good_lines(start: int, stop: int) -> list[bytes]:
        idx = arrival.order[start:stop]
        return event_lines(idx, clicks.user_id[idx], clicks.item_id[idx], clicks.event_type[idx], price[idx],
                           clicks.ts_ms[idx], id_prefix=f"evt-{config.seed}-")

    out_dir = Path(config.out_dir)
    user_profile_path, item_stats_path = out_dir / "user_profile.parquet", out_dir / "item_stats.parquet"
    events_path = out_dir / "events" / "clicks.jsonl"
    write_parquet(user_table, user_profile_path)
    write_parquet(item_table, item_stats_path)
    write_lines(events_path, n_good, is_malformed, good_lines, bad_lines, progress)
    return GenerateSummary(
        user_profile_path=user_profile_path, item_stats_path=item_stats_path, events_path=events_path,
        users=config.users, items=config.items,
        snapshot_rows_user=user_table.num_rows, snapshot_rows_item=item_table.num_rows,
        events=n_good, out_of_order=int(arrival.out_of_order.sum()), late=int(arrival.late.sum()), malformed=n_bad,
        first_event=_EPOCH + int(clicks.ts_ms[0]) * _MS if n_good else config.end,
        last_event=_EPOCH + int(clicks.ts_ms[-1]) * _MS if n_good else config.end,
    )
