"""`materialize batch`: for each batch view, the newest row per entity with start <= row_ts <= end, into Redis.

The rows come from the offline engine's DuckDB views (the newest row_ts per
entity, then created_ts among ties: Feast's own order), are encoded a record
batch at a time into Feast's bytes and written with Feast's newer-wins rule,
so the result is what `feast materialize` over the same range leaves.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import redis
import yaml

from featurestream.definitions import BatchViewSpec, RepoSpecs
from featurestream.offline.engine import connect, ident, quote, register_batch_source
from materializers.batch.encode import entity_keys, timestamps, value_protos
from materializers.batch.progress import Done, last_done, record_done
from materializers.batch.redis_writer import FeastLayoutWriter, newer

READ_BATCH_ROWS = 10_000  # small enough that Redis works on one batch while the next is encoded
# progress(view, rows done, rows total)
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ViewRun:
    view: str
    start_ms: int
    end_ms: int
    rows: int        # entities with a row in the range
    written: int     # keys that took the row (newer than what Redis held)
    seconds: float


def key_expiry_s(repo_path: Path) -> int | None:
    """Feast's `online_store.key_ttl_seconds`, which `feast materialize` applies as a key expiry."""
    config = yaml.safe_load((repo_path / "feature_store.yaml").read_text()) or {}
    online = config.get("online_store") or {}
    return online.get("key_ttl_seconds") if isinstance(online, dict) else None


def incremental_start(client: redis.Redis, project: str, view: BatchViewSpec, end_ms: int) -> int:
    """Where an incremental run starts: the recorded end, else (as Feast's first incremental run) end - ttl."""
    done = last_done(client, project, view.name)
    if done is not None:
        return done.end_ms
    return end_ms - view.ttl_ms if view.ttl_ms else 0


def _in_range(view: BatchViewSpec, start_ms: int, end_ms: int) -> str:
    """start <= row_ts <= end on the timestamp column itself, so DuckDB can skip row groups by their statistics."""
    ts = ident(view.timestamp_field)
    return (f"{ts} BETWEEN make_timestamptz({start_ms * 1000}) AND make_timestamptz({end_ms * 1000})"
            f" AND {' AND '.join(f'{ident(k)} IS NOT NULL' for k in view.join_keys)}")


def newest_sql(view: BatchViewSpec, source: str, start_ms: int, end_ms: int) -> str:
    """The entities with a row in the range and their newest row_ts: the keys whose stored rows are read."""
    keys = ", ".join(ident(k) for k in view.join_keys)
    return (f"SELECT {keys}, max({ident(view.timestamp_field)}) AS __newest FROM {ident(source)}"
            f" WHERE {_in_range(view, start_ms, end_ms)} GROUP BY {keys}")


def rows_sql(view: BatchViewSpec, source: str, start_ms: int, end_ms: int, rows: range) -> str:
    """The row per entity of table `newest` (those at rowids `rows`): the latest created among the rows at
    its newest row_ts (Feast's order).

    `__row` is the entity's rowid in `newest`. Two steps, because an arg_max carrying every feature over
    all rows costs several times a max of the timestamp and this pick among the few rows at it.
    """
    keys = ", ".join(ident(k) for k in view.join_keys)
    ts = ident(view.timestamp_field)
    row = ", ".join([f"'__ts': {ts}", *(f"{quote(f)}: {ident(f)}" for f in view.feature_names)])
    created = f"coalesce({ident(view.created_timestamp_column)}, '-infinity')" if view.created_timestamp_column else ts
    return f"""SELECT __row, {keys}, unnest(arg_max({{{row}}}, {created}))
        FROM {ident(source)} JOIN (SELECT rowid AS __row, * FROM newest
                                   WHERE rowid >= {rows.start} AND rowid < {rows.stop}) USING ({keys})
        WHERE {ts} = __newest AND {_in_range(view, start_ms, end_ms)} GROUP BY __row, {keys}"""


def row_parts(entities: int) -> list[range]:
    """The rowids of `newest` picked by each query: a quarter first, whose rows Redis writes while
    DuckDB picks the rest (a pick costs about a scan of the source plus a share of its entities)."""
    first = min(entities, max(READ_BATCH_ROWS, entities // 4))
    return [part for part in (range(0, first), range(first, entities)) if len(part)]


def materialize_view(specs: RepoSpecs, view: BatchViewSpec, client: redis.Redis, start_ms: int, end_ms: int,
                     expiry_s: int | None = None, progress: Progress | None = None) -> ViewRun:
    """Copy the newest row per entity in [start, end] (inclusive, as Feast) of one view; records the run.

    Redis reads the entities' stored timestamps while DuckDB picks their rows on a thread (a query
    releases the GIL), and writes the first part's newer rows while DuckDB picks the rest.
    """
    from feast.infra.online_stores.helpers import _mmh3

    started = time.monotonic()
    con = connect()
    try:
        source = register_batch_source(con, view)
        features = list(view.feature_names)
        con.execute(f"CREATE TEMP TABLE newest AS {newest_sql(view, source, start_ms, end_ms)}")
        entities = con.sql(f"SELECT rowid AS __row, {', '.join(ident(k) for k in view.join_keys)} FROM newest"
                           ).to_arrow_table()
        con.execute("SET threads = 1")  # the picks scale no better on two threads here, and Redis needs a core
        with (ThreadPoolExecutor(1) as pool,  # leaving it waits for the queries, before `con` closes
              FeastLayoutWriter(client, f"_ts:{view.name}".encode(),
                                [_mmh3(f"{view.name}:{f}") for f in features], expiry_s) as writer):
            # Tables of the database, not TEMP ones of `con`, so the cursor below reads them while `con` works.
            picks = [pool.submit(con.execute, f"CREATE TABLE __rows_{i} AS "
                                              f"{rows_sql(view, source, start_ms, end_ms, rows)}")
                     for i, rows in enumerate(row_parts(len(entities)))]
            keys = entity_keys(view.join_keys, [entities.column(k).combine_chunks() for k in view.join_keys],
                               specs.project)
            stored = np.zeros(len(entities), np.int64)
            stored[entities.column("__row").to_numpy()] = writer.stored(keys)
            reader = con.cursor()
            done = 0
            for i, pick in enumerate(picks):
                pick.result()
                for batch in reader.sql(f"SELECT * FROM __rows_{i}").to_arrow_reader(READ_BATCH_ROWS):
                    stamps, nanos = timestamps(batch.column("__ts"))
                    done += batch.num_rows
                    keep = newer(nanos, stored[batch.column("__row").to_numpy()])
                    if not keep.all():
                        taken = pa.array(keep)
                        batch, stamps = batch.filter(taken), stamps.filter(taken)
                    redis_keys = entity_keys(view.join_keys, [batch.column(k) for k in view.join_keys],
                                             specs.project)
                    values = [value_protos(batch.column(f), view.feature_types[f]) for f in features]
                    writer.write(redis_keys, stamps, values)
                    if progress is not None:
                        progress(view.name, done, len(entities))
        written = writer.written
    finally:
        con.close()
    record_done(client, specs.project, view.name, Done(start_ms, end_ms, len(entities), written,
                                                       int(time.time() * 1000)))
    return ViewRun(view.name, start_ms, end_ms, len(entities), written, time.monotonic() - started)


def materialize(specs: RepoSpecs, repo_path: Path, client: redis.Redis, views: Sequence[str] | None,
                end_ms: int, start_ms: int | None, progress: Progress | None = None) -> list[ViewRun]:
    """Materialize the named batch views (all by default); `start_ms` None means incremental."""
    unknown = sorted(set(views or ()) - specs.batch_views.keys())
    if unknown:
        raise ValueError(f"unknown batch feature view {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(sorted(specs.batch_views))}")
    expiry = key_expiry_s(repo_path)
    runs = []
    for name in views or sorted(specs.batch_views):
        view = specs.batch_views[name]
        start = start_ms if start_ms is not None else incremental_start(client, specs.project, view, end_ms)
        runs.append(materialize_view(specs, view, client, start, end_ms, expiry, progress))
    return runs
