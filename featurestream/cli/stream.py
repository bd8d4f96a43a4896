"""`featurestream materialize stream` and `featurestream replay`."""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Annotated

import redis
import typer
from prometheus_client import start_http_server
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TimeElapsedColumn

from featurestream.cli.common import console, err_console, fail, friendly_errors, settings
from featurestream.config import Settings, kafka_client_config
from featurestream.definitions import RepoSpecs, StreamViewSpec, load_repo
from featurestream.event_log_files import log_paths
from featurestream.replay import count_lines, iter_event_log, iter_jsonl, replay

materialize_app = typer.Typer(help="Run the materializers that write features into Redis.", no_args_is_help=True)


def wait_for_services(config: Settings, timeout_s: float) -> redis.Redis:
    """Redis and Kafka, retried with backoff: a starting cluster is not an error, a dead one after `timeout_s` is."""
    from featurestream.services import kafka_broker

    client = redis.Redis.from_url(config.redis_url, socket_timeout=10, socket_connect_timeout=5,
                                  health_check_interval=30)
    deadline = time.monotonic() + timeout_s
    delay = 0.5
    while True:
        problems = []
        try:
            client.ping()
        except redis.RedisError as exc:
            problems.append(f"Redis at {config.redis_url}: {exc}")
        if not kafka_broker.answers(config):
            problems.append(f"Kafka at {config.kafka_bootstrap}: no broker answers")
        if not problems:
            return client
        if time.monotonic() + delay > deadline:
            raise fail("cannot reach " + "; ".join(problems) + " (is `featurestream services up` running?)")
        err_console.print(f"waiting for {'; '.join(problems)}; retrying in {delay:.1f} s")
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def _stream_setup(names: list[str] | None, connect_timeout: float
                  ) -> tuple[Settings, RepoSpecs, list[StreamViewSpec], redis.Redis]:
    """Settings, the registry, the chosen stream views (a sentence for unknown ones) and a live Redis."""
    from materializers.stream.runner import select_views

    config = settings()
    specs = load_repo(config.repo_path)
    try:
        views = select_views(specs, names)
    except ValueError as exc:
        raise fail(str(exc)) from None
    return config, specs, views, wait_for_services(config, connect_timeout)


@materialize_app.command("stream")
@friendly_errors
def materialize_stream(
    feature_view: Annotated[list[str] | None, typer.Option("--feature-view", "-v",
                                                          help="Only these stream views (repeatable).")] = None,
    group: Annotated[str | None, typer.Option(help="Consumer group (default featurestream-<project>).")] = None,
    metrics_port: Annotated[int, typer.Option(envvar="FEATURESTREAM_METRICS_PORT",
                                              help="Prometheus port; 0 disables.")] = 9464,
    batch_size: Annotated[int, typer.Option(min=1, help="Records per micro-batch at most.")] = 100_000,
    flush_interval: Annotated[float, typer.Option(min=0.05, help="Seconds between event-log flushes and commits.")] = 2.0,
    idle_exit: Annotated[float | None, typer.Option(help="Exit after this many idle seconds (backfills).")] = None,
    connect_timeout: Annotated[float, typer.Option(help="Give up when Kafka or Redis stay unreachable this long.")] = 120.0,
    rejoin_after: Annotated[float, typer.Option(min=1, help="Recreate the Kafka consumer when it has been out of "
                                                "its group (no coordinator) this many seconds.")] = 60.0,
) -> None:
    """Consume the KafkaSource topics of the stream views into Redis, the event log and the DLQ, exactly once.

    Several processes with the same --group split the partitions and together give the state one process gives.
    SIGTERM or Ctrl-C finishes the batch, commits and exits 0.
    """
    # Until the loop installs its own handlers there is nothing to flush: stop at once, cleanly.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(0))
    from materializers.stream.runner import StreamMaterializer, StreamOptions

    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=err_console)])
    config, specs, views, client = _stream_setup(feature_view, connect_timeout)
    if metrics_port:
        start_http_server(metrics_port)
    options = StreamOptions(group=group or f"featurestream-{specs.project}", kafka_config=kafka_client_config(config),
                            batch_size=batch_size, flush_interval_s=flush_interval, idle_exit_s=idle_exit,
                            rejoin_after_s=rejoin_after)
    topics = sorted({v.source.topic for v in views})
    console.print(f"materializing {', '.join(v.name for v in views)} from {', '.join(topics)} "
                  f"(group {options.group}" + (f", metrics on :{metrics_port}" if metrics_port else "") + ")")
    StreamMaterializer(specs.project, views, client, options).run()
    console.print("stopped cleanly")


def _usual_key(views: list[StreamViewSpec]) -> str:
    """The join key most views of a source share (ties by name), so one entity's events share a partition."""
    counts = Counter(view.join_keys[0] for view in views)
    return min(counts, key=lambda key: (-counts[key], key))


@friendly_errors
def replay_command(
    file: Annotated[Path | None, typer.Option("--file", "-f", help="JSON lines, one event per line.")] = None,
    event_log: Annotated[bool, typer.Option("--event-log", help="Replay the source's event log instead.")] = False,
    source: Annotated[str, typer.Option(help="KafkaSource whose topic (and event log) to use.")] = "clicks",
    topic: Annotated[str | None, typer.Option(help="Override the topic.")] = None,
    key_field: Annotated[str | None, typer.Option(help="Field whose value keys each record (default: the "
                                                  "join key most of the source's views use).")] = None,
    rate: Annotated[float, typer.Option(min=0, help="Records per second; 0 = as fast as possible.")] = 0.0,
) -> None:
    """Produce stored events into a topic, keyed by entity, with a progress bar."""
    config = settings()
    specs = load_repo(config.repo_path)
    views = [v for v in specs.stream_views.values() if v.source.name == source]
    if not views:
        known = sorted({v.source.name for v in specs.stream_views.values()})
        raise fail(f"no stream feature view reads source {source!r}; known sources: {', '.join(known)}")
    spec = views[0].source
    if (file is None) == (not event_log):
        raise fail("give exactly one of --file FILE or --event-log")
    if file is not None:
        if not file.is_file():
            raise fail(f"{file} does not exist or is not a file")
        total, records = count_lines(file), iter_jsonl(file)
        origin = str(file)
    else:
        directory = Path(spec.event_log_path or "")
        if not log_paths(directory):
            raise fail(f"the event log {directory} holds no Parquet files yet")
        import pyarrow.parquet as pq

        total = sum(pq.read_metadata(p).num_rows for p in log_paths(directory))
        records, origin = iter_event_log(directory, spec.timestamp_field), str(directory)
    target = topic or spec.topic
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TaskProgressColumn(), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(f"replaying into {target}", total=total)
        summary = replay(records, target, kafka_client_config(config), key_field or _usual_key(views), rate,
                         progress=lambda done: bar.update(task, completed=done))
    console.print(f"produced {summary.produced:,} records from {origin} into {target} in {summary.seconds:.1f} s "
                  f"({summary.rate:,.0f}/s)" + (f"; {summary.failed} failed" if summary.failed else ""))
    if summary.failed:
        raise typer.Exit(1)


@friendly_errors
def rebuild_command(
    feature_view: Annotated[list[str] | None, typer.Option("--feature-view", "-v",
                                                          help="Only these stream views (repeatable).")] = None,
    group: Annotated[str | None, typer.Option(help="Consumer group whose progress to reset "
                                              "(default featurestream-<project>).")] = None,
    connect_timeout: Annotated[float, typer.Option(help="Give up when Kafka or Redis stay unreachable this long.")] = 60.0,
) -> None:
    """Recompute the stream views' state in Redis from the event log, e.g. after Redis lost its data.

    Stop the stream materializers of the group first; restart them afterwards and they continue
    from where the event log ends.
    """
    from materializers.stream.rebuild import RebuildError, count_events, rebuild

    config, specs, views, client = _stream_setup(feature_view, connect_timeout)
    group = group or f"featurestream-{specs.project}"
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TaskProgressColumn(), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("rebuilding from the event log", total=count_events(views))
        try:
            summary = rebuild(specs.project, views, client, group, kafka_client_config(config),
                              progress=lambda done: bar.update(task, completed=done))
        except RebuildError as exc:
            raise fail(str(exc)) from None
    resumed = ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(summary.resumed_at.items()))
    console.print(f"rebuilt {', '.join(v.name for v in views)} from {summary.events:,} events in "
                  f"{summary.seconds:.1f} s ({summary.keys_deleted:,} old keys removed); "
                  f"materializers of group {group} resume at {resumed or 'the beginning'}")
    if summary.refused:
        console.print(f"[yellow]the event log held events the views refused: {summary.refused}[/]")
