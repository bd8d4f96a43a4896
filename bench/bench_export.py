"""Training-export benchmark: wall time and peak RSS for 100k / 1M / 10M entity rows against 10M batch rows
and 10M events, next to Feast's `get_historical_features` and a plain DuckDB ASOF join (the floor).

Prints a table; asserts nothing. Each measurement runs in its own process, so peak RSS is its own.
Run with `make bench` or `.venv/bin/python -m bench.bench_export [--sizes 100000,1000000] [--skip-feast]`.
Data (vectorized numpy, seeded) is cached under $XDG_CACHE_HOME/featurestream-bench (or ~/.cache).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench.common import applied_repo_copy, machine
from featurestream.generate.snapshots import ITEM_STATS_SCHEMA, USER_PROFILE_SCHEMA

DAY_MS = 86_400_000
END_MS = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp() * 1000)
USERS, ITEMS = 1_000_000, 100_000
USER_DAYS, ITEM_SNAPSHOTS = 8, 20          # 8M + 2M = 10M batch rows
EVENTS = 10_000_000
PARTITIONS = 4
BATCH_FEATURES = ["user_profile:account_age_days", "user_profile:country", "user_profile:lifetime_orders",
                  "user_profile:lifetime_spend", "item_stats:price", "item_stats:category", "item_stats:popularity_7d"]
COUNTRIES = np.array(["US", "GB", "DE", "FR", "IN", "BR", "JP", "CA"], dtype=object)
CATEGORIES = np.array(["books", "electronics", "home", "sports", "toys", "fashion"], dtype=object)
EVENT_TYPES = np.array(["view", "click", "add_to_cart", "purchase"], dtype=object)
_TS = pa.timestamp("ms", tz="UTC")


def cache_dir() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "featurestream-bench" / f"u{USERS}-i{ITEMS}-e{EVENTS}"


def skewed_ids(rng: np.random.Generator, n: int, top: int) -> np.ndarray:
    """Ids 1..top, low ids much more frequent (a few heavy users, a long tail)."""
    return (top * rng.random(n) ** 2).astype(np.int64) + 1


def snapshot_table(rng: np.random.Generator, ids: int, snapshots: int, schema: pa.Schema, values: dict) -> pa.Table:
    """`snapshots` rows per id, `DAY_MS * 8 / snapshots` apart, published a few minutes later; 0.5% republished."""
    step = USER_DAYS * DAY_MS // snapshots
    snapshot = np.repeat(END_MS - USER_DAYS * DAY_MS + np.arange(snapshots) * step, ids)
    created = snapshot + rng.integers(120_000, 900_000, len(snapshot))
    again = rng.random(len(snapshot)) < 0.005   # corrections: same snapshot time, later created time
    columns = {"id": np.tile(np.arange(1, ids + 1), snapshots), "snapshot_ts": snapshot, "created_ts": created,
               **{name: make(len(snapshot)) for name, make in values.items()}}
    for name, column in columns.items():
        extra = column[again] if name != "created_ts" else created[again] + 3_600_000
        columns[name] = np.concatenate([column, extra])
    arrays = [pa.array(columns[name], type=field.type) if name not in ("snapshot_ts", "created_ts")
              else pa.array(columns[name], _TS) for name, field in zip(columns, schema)]
    return pa.Table.from_arrays(arrays, schema=schema)


def write_batch_tables(rng: np.random.Generator, out: Path) -> None:
    users = snapshot_table(rng, USERS, USER_DAYS, USER_PROFILE_SCHEMA, {
        "account_age_days": lambda n: rng.integers(0, 3650, n),
        "country": lambda n: COUNTRIES[rng.integers(0, len(COUNTRIES), n)],
        "lifetime_orders": lambda n: rng.integers(0, 500, n),
        "lifetime_spend": lambda n: np.round(rng.lognormal(6, 1, n), 2)})
    pq.write_table(users, out / "user_profile.parquet", row_group_size=1 << 20)
    items = snapshot_table(rng, ITEMS, ITEM_SNAPSHOTS, ITEM_STATS_SCHEMA, {
        "price": lambda n: np.round(rng.lognormal(3.5, 1, n), 2),
        "category": lambda n: CATEGORIES[rng.integers(0, len(CATEGORIES), n)],
        "popularity_7d": lambda n: rng.integers(0, 10_000, n)})
    pq.write_table(items, out / "item_stats.parquet", row_group_size=1 << 20)


def write_event_log(rng: np.random.Generator, directory: Path) -> None:
    """10M clicks over the last day as the stream materializer logs them: one file per partition and million."""
    from featurestream.event_log_files import file_name

    directory.mkdir(parents=True, exist_ok=True)
    ts = np.sort(rng.integers(END_MS - DAY_MS, END_MS, EVENTS))
    user = skewed_ids(rng, EVENTS, USERS)
    price = np.round(rng.lognormal(3.5, 1, EVENTS), 2)
    table = pa.table({
        "event_id": pc.binary_join_element_wise("e", pc.cast(pa.array(np.arange(EVENTS)), pa.string()), ""),
        "user_id": user,
        "item_id": rng.integers(1, ITEMS + 1, EVENTS),
        "event_type": pa.array(EVENT_TYPES[rng.choice(4, EVENTS, p=[0.7, 0.2, 0.07, 0.03])], pa.string()),
        "price": pa.array(price, mask=rng.random(EVENTS) < 0.02),
        "event_timestamp": pa.array(ts, _TS),
    })
    partition = (user % PARTITIONS).astype(np.int32)
    for p in range(PARTITIONS):
        rows = table.filter(pa.array(partition == p))
        rows = rows.append_column("_partition", pa.array(np.full(len(rows), p, np.int32)))
        rows = rows.append_column("_offset", pa.array(np.arange(len(rows), dtype=np.int64)))
        for first in range(0, len(rows), 1_000_000):
            part = rows.slice(first, 1_000_000)
            pq.write_table(part, directory / file_name("clicks", p, first, first + len(part) - 1))


def entity_rows(size: int, out: Path) -> Path:
    path = out / f"entities-{size}.parquet"
    if not path.exists():
        rng = np.random.default_rng(size)
        pq.write_table(pa.table({
            "user_id": skewed_ids(rng, size, USERS),
            "item_id": rng.integers(1, ITEMS + 1, size),
            "event_timestamp": pa.array(rng.integers(END_MS - DAY_MS, END_MS, size), _TS),
            "candidate_price": np.round(rng.lognormal(3.5, 1, size), 2),
        }), path)
    return path


def bench_data(sizes: list[int]) -> tuple[Path, list[Path]]:
    """The cached data directory (batch tables, event log) and one entity file per size."""
    out = cache_dir()
    if not (out / "done").exists():
        out.mkdir(parents=True, exist_ok=True)
        began = time.perf_counter()
        rng = np.random.default_rng(7)
        write_batch_tables(rng, out)
        write_event_log(rng, out / "event_log" / "clicks")
        (out / "done").write_text("")
        print(f"  generated 10M batch rows and {EVENTS:,} events in {time.perf_counter() - began:.0f} s into {out}")
    return out, [entity_rows(size, out) for size in sizes]


def bench_repo(data: Path, connection_string: str | None = None) -> Path:
    """The demo repo, applied under a private project, its data/ pointing at the benchmark data."""
    repo, _ = applied_repo_copy("clicks", connection_string=connection_string)
    (repo / "data").mkdir(exist_ok=True)
    for name in ("user_profile.parquet", "item_stats.parquet", "event_log"):
        (repo / "data" / name).symlink_to(data / name)
    return repo


# --- one measurement, in its own process ---------------------------------------------------------

def measure(kind: str, repo: Path, entities: Path, out: Path) -> None:
    """Run one export kind and print {"seconds", "rows", "peak_rss_gib"} (this process's own peak) as JSON."""
    if kind.startswith("ours"):
        from featurestream.definitions import load_repo
        from featurestream.offline import export_to_parquet

        specs = load_repo(repo)  # Feast's import and registry read: outside the timer, for both
        if kind == "ours-all-cold":
            view = specs.stream_views["user_activity"]
            shutil.rmtree(Path(view.source.event_log_path).parent / ".clicks-udf-cache", ignore_errors=True)
        refs = BATCH_FEATURES if kind == "ours-batch" else None
        service = None if refs else "purchase_model_v1"
        began = time.perf_counter()
        rows = export_to_parquet(specs, entities, out, features=refs, feature_service=service).rows
    elif kind == "feast-batch":
        import warnings

        import pandas as pd
        from feast import FeatureStore

        warnings.simplefilter("ignore")
        store = FeatureStore(repo_path=str(repo))
        store.list_feature_views()
        began = time.perf_counter()
        frame = pd.read_parquet(entities)
        table = store.get_historical_features(entity_df=frame, features=BATCH_FEATURES).to_arrow()
        pq.write_table(table, out)
        rows = table.num_rows
    elif kind == "asof-floor":
        import duckdb

        began = time.perf_counter()
        con = duckdb.connect()
        con.execute(f"""COPY (
            SELECT e.*, u.account_age_days, u.country, u.lifetime_orders, u.lifetime_spend,
                   i.price, i.category, i.popularity_7d
            FROM read_parquet('{entities}') e
            ASOF LEFT JOIN read_parquet('{repo / "data" / "user_profile.parquet"}') u
              ON e.user_id = u.user_id AND e.event_timestamp >= u.snapshot_ts
            ASOF LEFT JOIN read_parquet('{repo / "data" / "item_stats.parquet"}') i
              ON e.item_id = i.item_id AND e.event_timestamp >= i.snapshot_ts
        ) TO '{out}' (FORMAT parquet)""")
        rows = pq.read_metadata(out).num_rows
    else:
        raise ValueError(kind)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"seconds": time.perf_counter() - began, "rows": rows, "peak_rss_gib": peak}))


def run_measure(kind: str, repo: Path, entities: Path) -> tuple[float, float]:
    """(seconds, peak RSS in GiB) of one measurement in a fresh process."""
    out = entities.with_name(f"out-{kind}-{entities.stem}.parquet")
    result = subprocess.run([sys.executable, "-m", "bench.bench_export", "--measure", kind, "--repo", str(repo),
                             "--entities", str(entities), "--out", str(out)], capture_output=True, text=True)
    out.unlink(missing_ok=True)
    if result.returncode != 0:
        print(f"  {kind} failed:\n{result.stderr[-3000:]}")
        return float("nan"), float("nan")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return report["seconds"], report["peak_rss_gib"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000,10000000", help="entity-row counts, comma-separated")
    parser.add_argument("--skip-feast", action="store_true", help="leave Feast out (it is the slowest)")
    parser.add_argument("--warm-only", action="store_true", help="skip the run with the udf cache cleared")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--repo", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--entities", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure, args.repo, args.entities, args.out)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"training export benchmark on {machine()}")
    data, entity_files = bench_data(sizes)
    repo = bench_repo(data)
    kinds = ["asof-floor", "ours-batch", *([] if args.skip_feast else ["feast-batch"]), "ours-all"]
    if not args.warm_only:
        kinds.insert(kinds.index("ours-all"), "ours-all-cold")  # once, at the first size: the udf pass uncached
    print("  seconds: the export call alone (imports and registry reads excluded for every run);"
          " ours-all-cold: udf cache cleared first")
    print(f"  {'entity rows':>12} {'run':<14} {'seconds':>8} {'peak RSS GiB':>13} {'vs ours-batch':>14}")
    for size, entities in zip(sizes, entity_files):
        results: dict[str, tuple[float, float]] = {}
        for kind in kinds if size == sizes[0] else [k for k in kinds if k != "ours-all-cold"]:
            results[kind] = run_measure(kind, repo, entities)
            seconds, rss = results[kind]
            ours = results.get("ours-batch", (float("nan"),))[0]
            ratio = f"{seconds / ours:.2f}x" if kind != "ours-batch" and ours == ours else ""
            print(f"  {size:>12,} {kind:<14} {seconds:>8.1f} {rss:>13.2f} {ratio:>14}", flush=True)


if __name__ == "__main__":
    main()
