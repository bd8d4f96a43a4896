"""Training export: entity rows in, point-in-time-correct features out, as Arrow or Parquet.

DuckDB reads and sorts the inputs once: the batch views' rows and the views'
events, of the requested entities only. The entity rows then go through in
chunks, in their own order: per chunk and set of join keys, the rows sorted by
(entity, time) are placed among those sorted inputs by binary search
(featurestream.offline.frames), features are gathered or reduced there, and put
back into the rows' order. No join or sort ever spans all entity rows, and
memory is bounded by the chunk size and the inputs of the requested entities.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from featurestream.definitions import RepoSpecs, StreamViewSpec, load_repo
from featurestream.offline.batch_join import BatchRows, batch_features, load_batch_rows
from featurestream.offline.engine import connect, ident, register_batch_source
from featurestream.offline.entities import ENTITY_TABLE, ROW, T, EntitySource, register_entities
from featurestream.offline.errors import OfflineError
from featurestream.offline.events import events_table
from featurestream.offline.frames import KID, POS, Events, Rows, ints, load_events, number_entities, scatter, sort_rows
from featurestream.offline.ondemand import apply_on_demand, check_request_fields
from featurestream.offline.plan import build_plan, internal_name, resolve_refs
from featurestream.offline.sessions import session_features
from featurestream.offline.windows import window_features

CHUNK_ROWS = 1_000_000
# progress(stage, done, total): stages "events" (udf over the event log files), "join" (entity rows).
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ExportSummary:
    rows: int
    columns: tuple[str, ...]
    seconds: float


@dataclass(frozen=True)
class _StreamGroup:
    """Views reading the same events (source, udf and join keys), and the features wanted of each."""

    events: Events
    views: tuple[tuple[StreamViewSpec, tuple[str, ...]], ...]


def export(repo: Path | str | RepoSpecs, entities: EntitySource, features: Sequence[str] | None = None,
           feature_service: str | None = None, full_feature_names: bool = False,
           timestamp_column: str | None = None, progress: Progress | None = None) -> pa.Table:
    """A point-in-time-correct training set as an Arrow table, one row per entity row, in their order.

    `repo` is a Feast repo path (its applied registry is read) or loaded specs. `entities` is a
    Parquet or CSV path, an Arrow table or a pandas DataFrame holding the join keys of the
    requested views, a timestamp column (`event_timestamp`, else the only timestamp column, or
    `timestamp_column`) and the request fields of on-demand views. Ask for `features`
    (`view:feature` references) or a `feature_service`. Columns: the entity rows' own, then the
    features in request order, named `feature` or, with `full_feature_names`, `view__feature`
    (as Feast's `get_historical_features`). Batch features: newest row with row_ts <= t within the
    ttl, ties by created timestamp; windowed and session features: the online semantics at t over
    the event log; on-demand features: the serving API's call. Raises OfflineError on bad input.
    """
    with _Export(repo, entities, features, feature_service, full_feature_names, timestamp_column, progress) as job:
        return pa.concat_tables(list(job.tables()))


def export_to_parquet(repo: Path | str | RepoSpecs, entities: EntitySource, out: Path,
                      features: Sequence[str] | None = None, feature_service: str | None = None,
                      full_feature_names: bool = False, timestamp_column: str | None = None,
                      progress: Progress | None = None) -> ExportSummary:
    """As `export`, written chunk by chunk to a Parquet file (renamed into place when complete).

    A chunk is written on a thread of its own while the next is computed (Arrow's writer releases the GIL).
    """
    started = time.monotonic()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    rows = 0
    writer: pq.ParquetWriter | None = None
    writing: Future[None] | None = None
    try:
        with _Export(repo, entities, features, feature_service, full_feature_names, timestamp_column,
                     progress) as job, ThreadPoolExecutor(1, thread_name_prefix="parquet-writer") as pool:
            for table in job.tables():
                if writer is None:
                    writer = pq.ParquetWriter(partial, table.schema, compression="zstd")
                if writing is not None:
                    writing.result()
                writing = pool.submit(writer.write_table, table)
                rows += table.num_rows
            if writing is not None:
                writing.result()
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        if writer is not None:
            writer.close()
    partial.replace(out)
    assert writer is not None  # tables() yields at least one (maybe empty) table
    return ExportSummary(rows, tuple(writer.schema.names), time.monotonic() - started)


class _Export:
    """One export: the connection, the entity rows, the sorted inputs, and the chunk-by-chunk join."""

    def __init__(self, repo: Path | str | RepoSpecs, entities: EntitySource, features: Sequence[str] | None,
                 feature_service: str | None, full_feature_names: bool, timestamp_column: str | None,
                 progress: Progress | None) -> None:
        self.specs = repo if isinstance(repo, RepoSpecs) else load_repo(Path(repo))
        self.plan = build_plan(self.specs, resolve_refs(self.specs, features, feature_service), full_feature_names)
        self.progress = progress or (lambda stage, done, total: None)
        self.con = connect()
        self.finals = self.con.cursor()
        self.finals.execute("SET TimeZone = 'UTC'")
        try:
            keys = {k for v in self.plan.batch for k in self.specs.batch_views[v].join_keys}
            keys |= {k for v in self.plan.stream for k in self.specs.stream_views[v].join_keys}
            self.entity = register_entities(self.con, entities, keys, timestamp_column)
            check_request_fields(self.specs, self.plan.on_demand, self.entity.columns)
            self.numbered: dict[tuple[str, ...], str] = {}
            self.batch = [self._batch_rows(v, f) for v, f in self.plan.batch.items()]
            self.streams = list(self._stream_groups())
        except BaseException:
            self.__exit__()
            raise

    def __enter__(self) -> _Export:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finals.close()
        self.con.close()

    def _entities(self, keys: tuple[str, ...]) -> str:
        """The table numbering the training rows' distinct values of `keys` (made on first use)."""
        if keys not in self.numbered:
            self.numbered[keys] = f"entities_{len(self.numbered)}"
            number_entities(self.con, keys, self.numbered[keys])
        return self.numbered[keys]

    def _batch_rows(self, name: str, features: Sequence[str]) -> BatchRows:
        view = self.specs.batch_views[name]
        source = register_batch_source(self.con, view)
        return load_batch_rows(self.con, view, source, self._entities(view.join_keys), features,
                               self.entity.min_t or 0, self.entity.max_t or 0)

    def _stream_groups(self) -> Iterator[_StreamGroup]:
        """The events of each (source, udf, join keys) of the requested stream views, sorted."""
        views = [self.specs.stream_views[v] for v in self.plan.stream]
        groups: dict[tuple[str, int], list[StreamViewSpec]] = {}
        for view in views:
            groups.setdefault((view.source.name, id(view.udf)), []).append(view)
        max_t = self.entity.max_t if self.entity.max_t is not None else 0
        for i, group in enumerate(groups.values()):
            source = group[0].source
            columns = list(dict.fromkeys(
                [k for v in group for k in v.join_keys]
                + [a.column for v in group for a in v.aggregations if a.name in self.plan.stream[v.name]]))
            name = f"events_{i}"
            events_table(self.con, name, source, group[0].udf, columns, max_t,
                         lambda done, total: self.progress("events", done, total))
            for keys in dict.fromkeys(v.join_keys for v in group):
                same = [v for v in group if v.join_keys == keys]
                aggregations = [a for v in same for a in v.aggregations if a.name in self.plan.stream[v.name]]
                events = load_events(self.con, name, keys, aggregations, self._entities(keys))
                yield _StreamGroup(events, tuple((v, self.plan.stream[v.name]) for v in same))
            self.con.execute(f"DROP TABLE {ident(name)}")  # sorted into Events: free DuckDB's copy

    def tables(self) -> Iterator[pa.Table]:
        """The output a chunk of entity rows at a time, in their order (one empty table when there are none)."""
        key_sets = list(self.numbered.items())
        kids = "".join(f", coalesce(k{i}.{KID}, -1) AS {KID}{i}" for i in range(len(key_sets)))
        joins = "".join(
            f" LEFT JOIN {ident(table)} k{i} ON " + " AND ".join(f"e.{ident(k)} = k{i}.{ident(k)}" for k in keys)
            for i, (keys, table) in enumerate(key_sets))
        entity = ", ".join(f"e.{ident(c)}" for c in self.entity.columns)
        reader = self.con.sql(f"SELECT {entity}, e.{T}{kids} FROM {ENTITY_TABLE} e{joins} ORDER BY e.{ROW}"
                              ).to_arrow_reader(CHUNK_ROWS)
        schema: pa.Schema | None = None
        done = 0
        for chunk in _chunks(reader, CHUNK_ROWS):
            t = ints(chunk.column(T))
            rows = {keys: sort_rows(ints(chunk.column(f"{KID}{i}")), t) for i, (keys, _) in enumerate(key_sets)}
            table = self._chunk(chunk, rows)
            schema = schema or table.schema
            done += chunk.num_rows
            self.progress("join", done, self.entity.rows)
            yield table.cast(schema)

    def _chunk(self, chunk: pa.Table, rows: dict[tuple[str, ...], Rows]) -> pa.Table:
        """One chunk of entity rows with every requested feature, in their order."""
        columns: dict[str, pa.Array | pa.ChunkedArray] = {c: chunk.column(c) for c in self.entity.columns}
        for batch in self.batch:
            for feature, values in batch_features(batch, rows[batch.view.join_keys]).items():
                columns[internal_name(batch.view.name, feature)] = values
        for group in self.streams:
            sorted_rows = rows[group.views[0][0].join_keys]
            end = group.events.end(sorted_rows)
            for view, wanted in group.views:
                build = session_features if view.is_session else window_features
                components, finals = build(view, group.events, sorted_rows, end, wanted)
                columns.update(self._finalize(sorted_rows, components, finals))
        joined = pa.table(columns)
        for view in self.plan.on_demand:
            spec = self.specs.on_demand_views[view]
            sources = {s: self.plan.stream.get(s) or self.plan.batch[s] for s in spec.source_views}
            columns.update(apply_on_demand(joined, spec, sources))
        return pa.table([columns[c] for c in self.entity.columns] + [columns[i] for i, _ in self.plan.outputs],
                        names=[*self.entity.columns, *(out for _, out in self.plan.outputs)])

    def _finalize(self, rows: Rows, components: dict[str, pa.Array], finals: list[str]) -> dict[str, pa.Array]:
        """The features from the sorted rows' components (the finalize SQL), in the chunk's order.

        On a cursor of its own: the main connection is streaming the entity rows.
        """
        self.finals.register("components", pa.table({POS: pa.array(rows.pos), **components}))
        try:
            result = self.finals.sql(f"SELECT {POS}, {', '.join(finals)} FROM components").to_arrow_table()
        except duckdb.Error as exc:
            raise OfflineError(f"computing stream features failed: {exc}") from exc
        finally:
            self.finals.unregister("components")
        where = ints(result[POS])
        return {name: scatter(result[name], where) for name in result.column_names if name != POS}


def _chunks(reader: pa.RecordBatchReader, size: int) -> Iterator[pa.Table]:
    """The reader's rows in tables of `size` rows (DuckDB hands out smaller batches), at least one."""
    pending: list[pa.RecordBatch] = []
    count = 0
    yielded = False
    for batch in reader:
        pending.append(batch)
        count += batch.num_rows
        if count >= size:
            yield pa.Table.from_batches(pending)
            pending, count, yielded = [], 0, True
    if pending or not yielded:
        yield pa.Table.from_batches(pending, schema=reader.schema)
