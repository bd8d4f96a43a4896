"""Batch materialization benchmark: rows/s of `featurestream materialize batch` next to `feast materialize`
on the same data (the export benchmark's batch tables: 1M users x 8 days, 100k items x 20 snapshots).

Prints a table (with the CPU seconds Redis spent, as the server is often the bound); asserts nothing. Writes into Redis db 7 under a private project and deletes its keys after.
Run with `make bench` or `.venv/bin/python -m bench.bench_batch [--feast-view VIEW] [--repeat N]`.
"""

from __future__ import annotations

import argparse
import time
import warnings
from datetime import UTC, datetime

import redis

from bench.bench_export import DAY_MS, END_MS, USER_DAYS, bench_data, bench_repo
from bench.common import machine, ready_settings
from featurestream.definitions import load_repo
from materializers.batch.progress import progress_key
from materializers.batch.runner import materialize
from materializers.stream.rebuild import delete_matching

REDIS_DB = 7


def clear(client: redis.Redis, project: str) -> int:
    """Remove the project's Feast keys (they end with its name) and its materialization record; how many keys."""
    deleted = delete_matching(client, f"*{project}")
    client.delete(progress_key(project))
    return deleted


def redis_cpu_s(client: redis.Redis) -> float:
    """Redis's CPU seconds so far: the writes' cost to the server, which a loaded machine's wall time hides."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def timed(label: str, client: redis.Redis, project: str, run: object) -> tuple[str, int, float, float]:
    """(label, entities written, seconds, Redis CPU seconds) of one materialization into an empty project."""
    clear(client, project)
    cpu = redis_cpu_s(client)
    began = time.perf_counter()
    run()  # type: ignore[operator]
    seconds = time.perf_counter() - began
    redis_s = redis_cpu_s(client) - cpu  # before the clear, whose deletes are not the run's
    return label, clear(client, project), seconds, redis_s


def median(runs: list[tuple[str, int, float, float]]) -> tuple[str, int, float, float]:
    return sorted(runs, key=lambda run: run[2])[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--feast-view", default="item_stats",
                        help="the view both materialize for the comparison (Feast is slow on all 1.1M entities)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of ours on that view; the median is shown (a shared machine is noisy)")
    args = parser.parse_args()
    ready_settings()
    print(f"batch materialization benchmark on {machine()}")
    data, _ = bench_data([])
    repo = bench_repo(data, f"127.0.0.1:6379,db={REDIS_DB}")
    specs = load_repo(repo)
    client = redis.Redis(db=REDIS_DB)
    start_ms, end_ms = END_MS - USER_DAYS * DAY_MS, END_MS
    start, end = (datetime.fromtimestamp(ms / 1000, UTC) for ms in (start_ms, end_ms))

    from feast import FeatureStore

    warnings.simplefilter("ignore")
    store = FeatureStore(repo_path=str(repo))
    try:
        rows = [
            timed("featurestream, all batch views", client, specs.project,
                  lambda: materialize(specs, repo, client, None, end_ms, start_ms)),
            median([timed(f"featurestream, {args.feast_view} (median of {args.repeat})", client, specs.project,
                          lambda: materialize(specs, repo, client, [args.feast_view], end_ms, start_ms))
                    for _ in range(args.repeat)]),
            timed(f"feast materialize, {args.feast_view}", client, specs.project,
                  lambda: store.materialize(start, end, feature_views=[args.feast_view])),
        ]
    finally:
        clear(client, specs.project)
    print(f"  range {start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC; Redis db {REDIS_DB}")
    print(f"  {'run':<40} {'entities':>10} {'seconds':>8} {'rows/s':>10} {'Redis CPU s':>12}")
    for label, entities, seconds, redis_s in rows:
        print(f"  {label:<40} {entities:>10,} {seconds:>8.1f} {entities / seconds:>10,.0f} {redis_s:>12.2f}")
    ours, feast = rows[1][1] / rows[1][2], rows[2][1] / rows[2][2]
    print(f"  rows/s, featurestream over feast materialize on {args.feast_view}: {ours / feast:.1f}x")


if __name__ == "__main__":
    main()
