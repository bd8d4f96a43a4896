"""Training export: entity rows in, point-in-time-correct features out, as Arrow or Parquet.

One DuckDB query joins everything (batch views by ASOF join, windowed and
session views from the event log) in the entity rows' order; its result is
streamed a record batch at a time through the on-demand views, so memory stays
bounded and DuckDB spills what does not fit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from featurestream.definitions import RepoSpecs, StreamViewSpec, load_repo
from featurestream.offline.batch_join import batch_joins
from featurestream.offline.engine import connect, ident, register_batch_source
from featurestream.offline.entities import ENTITY_TABLE, ROW, EntitySource, register_entities
from featurestream.offline.errors import OfflineError
from featurestream.offline.events import events_table
from featurestream.offline.frames import Events, load_events
from featurestream.offline.ondemand import ARROW_TYPES, apply_on_demand, check_request_fields
from featurestream.offline.plan import build_plan, internal_name, resolve_refs
from featurestream.offline.sessions import session_features_sql
from featurestream.offline.windows import window_features_sql

OUTPUT_BATCH_ROWS = 100_000
# progress(stage, done, total): stages "events" (udf over the event log), "join" (percent), "write" (rows).
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ExportSummary:
    rows: int
    columns: tuple[str, ...]
    seconds: float


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
        batches = list(job.batches())
        return pa.Table.from_batches(batches, schema=job.schema) if batches else job.schema.empty_table()


def export_to_parquet(repo: Path | str | RepoSpecs, entities: EntitySource, out: Path,
                      features: Sequence[str] | None = None, feature_service: str | None = None,
                      full_feature_names: bool = False, timestamp_column: str | None = None,
                      progress: Progress | None = None) -> ExportSummary:
    """As `export`, written batch by batch to a Parquet file (renamed into place when complete)."""
    started = time.monotonic()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    rows = 0
    with _Export(repo, entities, features, feature_service, full_feature_names, timestamp_column, progress) as job:
        with pq.ParquetWriter(partial, job.schema, compression="zstd") as writer:
            for batch in job.batches():
                writer.write_batch(batch)
                rows += batch.num_rows
    partial.replace(out)
    return ExportSummary(rows, tuple(job.schema.names), time.monotonic() - started)


class _Export:
    """One export: the connection, the registered inputs, the query, the output schema."""

    def __init__(self, repo: Path | str | RepoSpecs, entities: EntitySource, features: Sequence[str] | None,
                 feature_service: str | None, full_feature_names: bool, timestamp_column: str | None,
                 progress: Progress | None) -> None:
        self.specs = repo if isinstance(repo, RepoSpecs) else load_repo(Path(repo))
        self.plan = build_plan(self.specs, resolve_refs(self.specs, features, feature_service), full_feature_names)
        self.progress = progress or (lambda stage, done, total: None)
        self.con = connect()
        keys = {k for v in self.plan.batch for k in self.specs.batch_views[v].join_keys}
        keys |= {k for v in self.plan.stream for k in self.specs.stream_views[v].join_keys}
        self.entity = register_entities(self.con, entities, keys, timestamp_column)
        check_request_fields(self.specs, self.plan.on_demand, self.entity.columns)
        self.query = self._query()
        self.schema = self._output_schema()

    def __enter__(self) -> _Export:
        return self

    def __exit__(self, *exc: object) -> None:
        self.con.close()

    def _query(self) -> str:
        batch = [(self.specs.batch_views[v], register_batch_source(self.con, self.specs.batch_views[v]), f)
                 for v, f in self.plan.batch.items()]
        joins, columns = batch_joins(batch, self.entity.min_t or 0, self.entity.max_t or 0)
        stream_joins = []
        for i, (sql, names) in enumerate(self._stream_queries()):
            stream_joins.append(f"LEFT JOIN ({sql}) s{i} ON s{i}.{ROW} = e.{ROW}")
            columns.extend(f"s{i}.{ident(n)}" for n in names)
        inputs = ", ".join(f"e.{ident(c)}" for c in self.entity.columns)
        selected = ", ".join([inputs, *columns])
        return (f"SELECT {selected} FROM {ENTITY_TABLE} e {joins} {' '.join(stream_joins)} ORDER BY e.{ROW}")

    def _stream_queries(self) -> Iterator[tuple[str, list[str]]]:
        """Per stream view: its query over the events its source and udf produce, and its output columns."""
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
            sorted_events: dict[tuple[str, ...], Events] = {}
            for j, view in enumerate(group):
                wanted = self.plan.stream[view.name]
                if view.join_keys not in sorted_events:
                    aggregations = [a for v in group if v.join_keys == view.join_keys for a in v.aggregations
                                    if a.name in self.plan.stream[v.name]]
                    sorted_events[view.join_keys] = load_events(self.con, name, view.join_keys, aggregations,
                                                                f"{name}_keys_{len(sorted_events)}")
                build = session_features_sql if view.is_session else window_features_sql
                sql = build(self.con, view, sorted_events[view.join_keys], wanted, f"{name}_view_{j}")
                yield sql, [internal_name(view.name, f) for f in wanted]
            self.con.execute(f"DROP TABLE {ident(name)}")  # the views' results are stored: free its memory

    def _output_schema(self) -> pa.Schema:
        """The entity rows' columns, then the requested features under their output names, with their types."""
        joined = self.con.sql(f"SELECT * FROM ({self.query}) LIMIT 0").to_arrow_table().schema
        types = {name: joined.field(name).type for name in joined.names}
        for view in self.plan.on_demand:
            for feature, kind in self.specs.on_demand_views[view].feature_types.items():
                types[internal_name(view, feature)] = ARROW_TYPES.get(kind, pa.null())
        return pa.schema([*(joined.field(c) for c in self.entity.columns),
                          *(pa.field(out, types[internal]) for internal, out in self.plan.outputs)])

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The output, a record batch at a time, on-demand features applied and columns renamed."""
        done = 0
        for batch in self._run_query():
            columns = {name: batch.column(name) for name in batch.schema.names}
            for view in self.plan.on_demand:
                spec = self.specs.on_demand_views[view]
                sources = {s: self.plan.stream.get(s) or self.plan.batch[s] for s in spec.source_views}
                columns.update(apply_on_demand(batch, spec, sources))
            arrays = [columns[c] for c in self.entity.columns] + [columns[internal] for internal, _ in self.plan.outputs]
            done += batch.num_rows
            self.progress("write", done, self.entity.rows)
            yield pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def _run_query(self) -> Iterator[pa.RecordBatch]:
        """Run the join, reporting DuckDB's own progress while it works, then stream the result."""
        stop = threading.Event()

        def poll() -> None:
            while not stop.wait(0.5):
                percent = self.con.query_progress()
                if percent >= 0:
                    self.progress("join", int(percent), 100)

        watcher = threading.Thread(target=poll, daemon=True)
        watcher.start()
        try:
            reader = self.con.sql(self.query).to_arrow_reader(OUTPUT_BATCH_ROWS)
        except duckdb.Error as exc:
            raise OfflineError(f"the training-set query failed: {exc}") from exc
        finally:
            stop.set()
            watcher.join()
        self.progress("join", 100, 100)
        return iter(reader)
