"""`featurestream demo`: the story so far, end to end, from an empty checkout.

Services up -> demo data -> feast apply -> stream materializer in the background ->
events replayed through Kafka with a live display -> features read back from Redis ->
clean shutdown of what the demo started.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import redis
import typer
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families
from rich.live import Live
from rich.table import Table

from featurestream.cli.common import console, fail, friendly_errors, settings
from featurestream.cli.generate import _parse_end, run_generate
from featurestream.cli.repo import apply_repo, specs_table
from featurestream.cli.services import _table
from featurestream.config import Settings, kafka_client_config
from featurestream.definitions import RepoSpecs
from featurestream.generate import GenerateConfig
from featurestream.online.keys import state_key
from featurestream.online.reader import session_features, window_features
from featurestream.replay import count_lines, iter_jsonl, replay
from featurestream.services import services_up

METRICS_PORT = 9465


def _reset(config: Settings, specs: RepoSpecs) -> None:
    """A fresh demo each run: its topics, its Redis keys and its event log start empty."""
    topics = sorted({v.source.topic for v in specs.stream_views.values()})
    admin = AdminClient(kafka_client_config(config))
    existing = admin.list_topics(timeout=10).topics
    doomed = [t for t in (*topics, *(f"{t}.dlq" for t in topics)) if t in existing]
    for future in (admin.delete_topics(doomed).values() if doomed else ()):
        future.result(30)
    client = redis.Redis.from_url(config.redis_url)
    for key in client.scan_iter(f"fs:{specs.project}:*", count=1000):
        client.delete(key)
    for view in specs.stream_views.values():
        if view.source.event_log_path:
            shutil.rmtree(view.source.event_log_path, ignore_errors=True)
    while doomed and set(doomed) & set(admin.list_topics(timeout=10).topics):
        time.sleep(0.2)


def _metrics() -> dict[str, float]:
    """Sums of the materializer's Prometheus metrics, by name (and DLQ by reason)."""
    import urllib.request

    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=1).read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if name == "featurestream_stream_dlq_total":
                name = f"dlq {sample.labels['reason']}"
            out[name] = out.get(name, 0.0) + sample.value
    return out


def _stats_table(stats: dict[str, float], produced: int, total: int) -> Table:
    table = Table("produced", "applied", "events/s", "consumer lag", "freshness", "dead letters", box=None)
    dlq = sum(v for k, v in stats.items() if k.startswith("dlq "))
    reasons = ", ".join(f"{k[4:]} {int(v)}" for k, v in sorted(stats.items()) if k.startswith("dlq "))
    table.add_row(f"{produced:,}/{total:,}", f"{int(stats.get('featurestream_stream_events_total', 0)):,}",
                  f"{stats.get('featurestream_stream_events_per_second', 0):,.0f}",
                  f"{int(stats.get('featurestream_stream_consumer_lag', 0)):,}",
                  f"{stats.get('featurestream_stream_freshness_seconds', 0):,.0f} s",
                  f"{int(dlq)} ({reasons})" if dlq else "0")
    return table


def _show_features(config: Settings, specs: RepoSpecs, users: list[int], as_of_ms: int) -> None:
    """Windowed and session features of a few users, read from Redis as the serving API will."""
    client = redis.Redis.from_url(config.redis_url)
    activity, session = specs.stream_views["user_activity"], specs.stream_views["user_session"]
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(as_of_ms / 1000))
    table = Table("feature", *(f"user {u}" for u in users), title=f"features as of the newest event ({stamp} UTC)")
    columns = []
    for user in users:
        values = window_features(activity, client.hgetall(
            state_key(specs.project, activity.name, activity.join_keys, (user,))), as_of_ms)
        values.update(session_features(session, client.hget(
            state_key(specs.project, session.name, session.join_keys, (user,)), "s"), as_of_ms))
        columns.append(values)
    for name in (*activity.feature_names, *session.feature_names):
        table.add_row(name, *(_fmt(values[name]) for values in columns))
    console.print(table)


def _fmt(value: object) -> str:
    return f"{value:,.2f}" if isinstance(value, float) else "-" if value is None else str(value)


@friendly_errors
def demo(
    events: Annotated[int, typer.Option(min=1, help="Events to generate and replay.")] = 200_000,
    users: Annotated[int, typer.Option(min=1)] = 5_000,
    items: Annotated[int, typer.Option(min=1)] = 1_000,
) -> None:
    """Run the whole story: services, data, feast apply, streaming into Redis with a live display, features."""
    began = time.monotonic()
    config = settings()
    console.rule("1. services (Kafka KRaft, Redis)")
    console.print(_table(services_up(config)))
    console.rule("2. demo data")
    summary = run_generate(GenerateConfig(out_dir=config.repo_path / "data", end=_parse_end(None), users=users,
                                          items=items, events=events, malformed_fraction=0.001))
    console.rule("3. feature definitions (validated, then feast apply)")
    specs = apply_repo(config.repo_path)
    console.print(specs_table(specs))
    _reset(config, specs)
    console.rule("4. stream materializer (background) and replay through Kafka")
    log_path = config.state_dir / "demo" / "materializer.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        materializer = subprocess.Popen(
            [str(Path(sys.executable).with_name("featurestream")), "materialize", "stream",
             "--metrics-port", str(METRICS_PORT), "--flush-interval", "1"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "FEATURESTREAM_REPO": str(config.repo_path)},
        )
    try:
        total = count_lines(summary.events_path)
        produced = [0]
        with Live(_stats_table({}, 0, total), console=console, refresh_per_second=4) as live:
            def progress(done: int) -> None:
                produced[0] = done
                live.update(_stats_table(_metrics(), done, total))

            result = replay(iter_jsonl(summary.events_path), "clicks", kafka_client_config(config), "user_id",
                            progress=progress)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                stats = _metrics()
                live.update(_stats_table(stats, result.produced, total))
                handled = stats.get("featurestream_stream_events_total", 0) + sum(
                    v for k, v in stats.items() if k.startswith("dlq "))
                if handled >= result.produced:
                    break
                if materializer.poll() is not None:
                    raise fail(f"the materializer stopped; see {log_path}")
                time.sleep(0.25)
        console.print(f"replayed {result.produced:,} records at {result.rate:,.0f}/s; "
                      f"materializer log: {log_path}; event log: {specs.stream_views['user_activity'].source.event_log_path}")
        console.rule("5. features in Redis")
        _show_features(config, specs, _latest_users(summary.events_path, 5), int(summary.last_event.timestamp() * 1000))
    finally:
        materializer.send_signal(signal.SIGTERM)
        materializer.wait(60)
    console.rule("done")
    console.print(f"demo finished in {time.monotonic() - began:.1f} s. Kafka and Redis keep running; "
                  "stop them with `featurestream services down`.")


def _latest_users(events_path: Path, n: int) -> list[int]:
    """The users whose newest event is the most recent: the ones with live sessions."""
    import orjson

    newest: dict[int, str] = {}
    for record in iter_jsonl(events_path):
        try:
            event = orjson.loads(record)
            newest[event["user_id"]] = max(newest.get(event["user_id"], ""), event["event_timestamp"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
    return sorted(newest, key=newest.__getitem__, reverse=True)[:n]
