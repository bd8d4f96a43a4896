"""`materialize batch`: for each batch view, the newest row per entity with start <= row_ts <= end, into Redis.

The rows come from the offline engine's DuckDB views (the newest row_ts per
entity, then created_ts among ties: Feast's own order), are encoded a record
batch at a time into Feast's bytes and written with Feast's newer-wins rule,
so the result is what `feast materialize` over the same range leaves.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import redis
import yaml

from featurestream.definitions import BatchViewSpec, RepoSpecs
from featurestream.offline.engine import connect, ident, quote, register_batch_source
from materializers.batch.encode import entity_keys, timestamps, value_protos
from materializers.batch.progress import Done, last_done, record_done
from materializers.batch.redis_writer import FeastLayoutWriter

READ_BATCH_ROWS = 25_000  # small enough that Redis answers one batch while the next is encoded
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


def newest_rows_sql(view: BatchViewSpec, source: str, start_ms: int, end_ms: int) -> str:
    """The newest row per entity with start <= row_ts <= end, ties broken by the created timestamp (Feast's order).

    Two steps, because an arg_max carrying every feature over all rows costs several times a max of the
    timestamp: the newest timestamp per entity, then, among the few rows at it, the latest created. The
    range compares the timestamp column itself, so DuckDB can skip row groups by their statistics.
    """
    keys = ", ".join(ident(k) for k in view.join_keys)
    ts = ident(view.timestamp_field)
    in_range = (f"{ts} BETWEEN make_timestamptz({start_ms * 1000}) AND make_timestamptz({end_ms * 1000})"
                f" AND {' AND '.join(f'{ident(k)} IS NOT NULL' for k in view.join_keys)}")
    row = ", ".join([f"'__ts': {ts}", *(f"{quote(f)}: {ident(f)}" for f in view.feature_names)])
    created = f"coalesce({ident(view.created_timestamp_column)}, '-infinity')" if view.created_timestamp_column else ts
    return f"""WITH newest AS (SELECT {keys}, max({ts}) AS __newest FROM {ident(source)} WHERE {in_range} GROUP BY {keys}),
        at_newest AS (SELECT * FROM {ident(source)} JOIN newest USING ({keys}) WHERE {ts} = __newest AND {in_range})
        SELECT {keys}, unnest(arg_max({{{row}}}, {created})) FROM at_newest GROUP BY {keys}"""


def materialize_view(specs: RepoSpecs, view: BatchViewSpec, client: redis.Redis, start_ms: int, end_ms: int,
                     expiry_s: int | None = None, progress: Progress | None = None) -> ViewRun:
    """Copy the newest row per entity in [start, end] (inclusive, as Feast) of one view; records the run."""
    from feast.infra.online_stores.helpers import _mmh3

    started = time.monotonic()
    con = connect()
    try:
        source = register_batch_source(con, view)
        features = list(view.feature_names)
        con.execute(f"CREATE TEMP TABLE latest AS {newest_rows_sql(view, source, start_ms, end_ms)}")
        total = con.execute("SELECT count(*) FROM latest").fetchall()[0][0]
        done = written = 0
        with FeastLayoutWriter(client, f"_ts:{view.name}".encode(),
                               [_mmh3(f"{view.name}:{f}") for f in features], expiry_s) as writer:
            for batch in con.sql("SELECT * FROM latest").to_arrow_reader(READ_BATCH_ROWS):
                redis_keys = entity_keys(view.join_keys, [batch.column(k) for k in view.join_keys], specs.project)
                stamps, nanos = timestamps(batch.column("__ts"))
                values = [value_protos(batch.column(f), view.feature_types[f]) for f in features]
                written += writer.write(redis_keys, stamps, nanos, values)
                done += batch.num_rows
                if progress is not None:
                    progress(view.name, done, total)
    finally:
        con.close()
    record_done(client, specs.project, view.name, Done(start_ms, end_ms, total, written, int(time.time() * 1000)))
    return ViewRun(view.name, start_ms, end_ms, total, written, time.monotonic() - started)


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
