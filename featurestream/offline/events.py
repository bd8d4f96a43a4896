"""Event-log rows as the aggregations see them: the view's udf applied per row, exactly as online.

The stream materializer calls the udf on each decoded event (timestamp as an
aware UTC datetime, absent columns as None) and takes the join keys and the
aggregated columns from what it returns; this does the same over the event
log. Calling Python per event is the one slow step of an export, so its output
is kept per event-log file (files are immutable: named by offset range,
rewritten only with the same events) in a cache beside the log, keyed by the
file and the udf's code, and files are derived in parallel processes.

The events table has the wanted columns, the event time in ms (`__ts`) and an
order key `__seq` (event time, partition, offset: what `last` breaks ties by;
offsets below 2^40 per partition).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from featurestream.definitions import StreamSourceSpec
from featurestream.event_log_files import log_paths
from featurestream.offline.engine import SQL_TYPES, ident, quote
from featurestream.offline.errors import OfflineError

TS = "__ts"
SEQ = "__seq"
ORDER = ("_partition", "_offset")
BATCH_ROWS = 100_000
Udf = Callable[[dict[str, Any]], dict[str, Any]]
Progress = Callable[[int, int], None]


def event_log_files(source: StreamSourceSpec) -> list[Path]:
    """The source's event-log files (none when it has no log yet)."""
    if not source.event_log_path:
        return []
    return log_paths(Path(source.event_log_path))


def events_table(con: duckdb.DuckDBPyConnection, name: str, source: StreamSourceSpec, udf: Udf | None,
                 columns: Sequence[str], max_t: int, progress: Progress | None = None) -> None:
    """Create temp table `name` with the events up to `max_t`: `columns` (keys and aggregated ones), TS and SEQ."""
    files = event_log_files(source)
    if udf is None:
        missing = [c for c in columns if c not in source.schema]
        if missing:
            raise OfflineError(f"source {source.name!r} has no column {', '.join(missing)}")
        ts = ident(source.timestamp_field)
        select = ", ".join([*(ident(c) for c in columns), f"epoch_ms({ts}) AS {TS}", *ORDER])
    else:
        files = derived_files(source, udf, columns, files, progress)
        select = ", ".join([*(ident(c) for c in columns), TS, *ORDER])
    if files:
        scan = f"read_parquet([{', '.join(quote(str(f)) for f in files)}], union_by_name = true)"
    else:
        types = {c: SQL_TYPES.get(source.schema.get(c, ""), "DOUBLE") for c in columns}
        scan = ("(SELECT " + ", ".join([*(f"NULL::{t} AS {ident(c)}" for c, t in types.items()),
                                         f"NULL::BIGINT AS {TS}", f"NULL::TIMESTAMPTZ AS {ident(source.timestamp_field)}",
                                         "NULL::INTEGER AS _partition", "NULL::BIGINT AS _offset"]) + " LIMIT 0)")
    # (ts, partition, offset) packed into one HUGEINT: the order `last` needs, with no global sort.
    seq = f"({TS}::HUGEINT << 64) + (_partition::HUGEINT << 40) + _offset"
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {ident(name)} AS
        SELECT * EXCLUDE ({', '.join(ORDER)}), {seq} AS {SEQ}
        FROM (SELECT {select} FROM {scan}) WHERE {TS} <= {max_t}""")


def derived_files(source: StreamSourceSpec, udf: Udf, columns: Sequence[str], files: list[Path],
                  progress: Progress | None = None) -> list[Path]:
    """One cached Parquet file of udf output per event-log file, deriving the missing ones in parallel."""
    cache = Path(source.event_log_path or "").parent / f".{Path(source.event_log_path or '').name}-udf-cache"
    version = _fingerprint(udf, columns)
    targets = [cache / version / f"{f.stem}-{f.stat().st_size}-{f.stat().st_mtime_ns}.parquet" for f in files]
    todo = [(f, t) for f, t in zip(files, targets) if not t.exists()]
    done = len(files) - len(todo)
    if progress is not None:
        progress(done, len(files))
    if todo:
        (cache / version).mkdir(parents=True, exist_ok=True)
        workers = min(len(todo), os.cpu_count() or 1)
        jobs = [(f, t, source, udf, tuple(columns)) for f, t in todo]
        if workers > 1:
            # fork: workers inherit the jobs, udf included, so nothing is pickled (a udf need not be
            # importable by name, e.g. when another copy of the repo's modules was imported since).
            _FORKED_JOBS[:] = jobs
            try:
                with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                    for _ in pool.map(_derive_forked, range(len(jobs))):
                        done += 1
                        if progress is not None:
                            progress(done, len(files))
            finally:
                _FORKED_JOBS.clear()
        else:
            for job in jobs:
                _derive_file(job)
                done += 1
                if progress is not None:
                    progress(done, len(files))
    return targets


_FORKED_JOBS: list[tuple[Path, Path, StreamSourceSpec, Udf, tuple[str, ...]]] = []


def _derive_forked(index: int) -> None:
    _derive_file(_FORKED_JOBS[index])


def _derive_file(job: tuple[Path, Path, StreamSourceSpec, Udf, tuple[str, ...]]) -> None:
    """Apply the udf to one event-log file and write its output columns, TS and the order columns."""
    path, target, source, udf, columns = job
    table = pq.read_table(path)
    parts = [_apply_udf(batch, source, udf, columns) for batch in table.to_batches(BATCH_ROWS)]
    derived = pa.concat_tables(parts, promote_options="permissive") if parts else None
    if derived is None or derived.num_rows == 0:
        derived = pa.table({**{c: pa.array([], pa.float64()) for c in columns}, TS: pa.array([], pa.int64()),
                            "_partition": pa.array([], pa.int32()), "_offset": pa.array([], pa.int64())})
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    pq.write_table(derived, partial)
    partial.replace(target)


def _apply_udf(batch: pa.RecordBatch, source: StreamSourceSpec, udf: Udf, columns: Sequence[str]) -> pa.Table:
    """Run the udf on each row of one batch; keep `columns` of its output, TS and the order columns.

    Rows are built as the decoder builds them (the timestamp an aware UTC datetime), with
    Arrow's slow per-value timezone conversion kept off the hot path.
    """
    names = list(source.schema)
    stamps = batch.column(source.timestamp_field)
    values = [_datetimes(stamps) if c == source.timestamp_field else batch.column(c).to_pylist() for c in names]
    try:
        outputs = list(map(udf, map(_row_builder(tuple(names)), *values)))
    except Exception as exc:  # the user's code: name it; the materializer dead-letters such events instead
        raise OfflineError(f"the udf of source {source.name!r} failed on an event-log row: "
                           f"{type(exc).__name__}: {exc}") from exc
    try:
        picked = list(map(itemgetter(*columns), outputs)) if len(columns) > 1 else [(o[columns[0]],) for o in outputs]
    except KeyError as exc:
        raise OfflineError(f"the udf of source {source.name!r} returned no column {exc.args[0]!r}") from None
    derived = {c: _typed(pa.array(list(values))) for c, values in zip(columns, zip(*picked))} if picked else {
        c: pa.array([], pa.float64()) for c in columns}
    ts_ms = pc.cast(pc.cast(stamps, pa.timestamp("ms", tz="UTC")), pa.int64())
    return pa.table({**derived, TS: ts_ms, "_partition": batch.column("_partition"), "_offset": batch.column("_offset")})


def _datetimes(stamps: pa.Array) -> list[datetime]:
    """Aware UTC datetimes, converted without a timezone first (Arrow's tz-aware conversion is ~10x slower)."""
    utc = UTC
    return [d.replace(tzinfo=utc) for d in pc.cast(stamps, pa.timestamp("ms")).to_pylist()]


@functools.cache
def _row_builder(names: tuple[str, ...]) -> Callable[..., dict[str, Any]]:
    """`f(v1, v2, ...) -> {name1: v1, ...}` for these names: a dict display, the fastest way to make each row."""
    args = [f"v{i}" for i in range(len(names))]
    body = ", ".join(f"{name!r}: {arg}" for name, arg in zip(names, args))
    return eval(f"lambda {', '.join(args)}: {{{body}}}")  # noqa: S307 - built from the source's own column names


def _fingerprint(udf: Udf, columns: Sequence[str]) -> str:
    """Changes when the udf's code (or its module's source) or the wanted columns change."""
    digest = hashlib.sha256(f"{udf.__module__}.{udf.__qualname__}|{','.join(columns)}".encode())
    code = getattr(udf, "__code__", None)
    if code is not None:
        digest.update(code.co_code)
        digest.update(repr(code.co_consts).encode())
    try:
        digest.update(inspect.getsource(inspect.getmodule(udf)).encode())  # type: ignore[arg-type]
    except (OSError, TypeError):
        pass  # no source to read (a builtin or interactive udf): the code object above stands for it
    return digest.hexdigest()[:16]


def _typed(column: pa.Array) -> pa.Array:
    """An all-null column gets a concrete type so DuckDB can aggregate it (to nothing)."""
    return column.cast(pa.float64()) if pa.types.is_null(column.type) else column
