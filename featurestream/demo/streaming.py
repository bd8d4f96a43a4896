"""The streaming part of the demo: a clean slate, then events replayed through Kafka with a live display."""

from __future__ import annotations

import shutil
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import redis
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.live import Live
from rich.table import Table

from featurestream.config import Settings, kafka_client_config
from featurestream.definitions import RepoSpecs
from featurestream.demo.background import Background, DemoError
from featurestream.event_log_files import log_paths
from featurestream.replay import ReplaySummary, count_lines, iter_jsonl, replay
from materializers.stream.rebuild import delete_matching


def reset(config: Settings, specs: RepoSpecs) -> None:
    """A fresh demo each run: its topics, its Redis keys and its event log start empty."""
    topics = sorted({v.source.topic for v in specs.stream_views.values()})
    admin = AdminClient(kafka_client_config(config))
    existing = admin.list_topics(timeout=10).topics
    doomed = [t for t in (*topics, *(f"{t}.dlq" for t in topics)) if t in existing]
    for future in (admin.delete_topics(doomed).values() if doomed else ()):
        future.result(30)
    client = redis.Redis.from_url(config.redis_url)
    delete_matching(client, f"fs:{specs.project}:*")
    for view in specs.stream_views.values():
        if view.source.event_log_path:
            shutil.rmtree(view.source.event_log_path, ignore_errors=True)
    while doomed and set(doomed) & set(admin.list_topics(timeout=10).topics):
        time.sleep(0.2)


def scrape(port: int) -> dict[str, float]:
    """Sums of the materializer's Prometheus metrics, by name (and dead letters by reason)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as response:
            text = response.read().decode()
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


def logged_rows(event_log: Path) -> int:
    """Events in the event log's files so far (from their Parquet footers)."""
    return sum(pq.read_metadata(path).num_rows for path in log_paths(event_log))


def dead_letters(stats: dict[str, float]) -> dict[str, int]:
    return {k[4:]: int(v) for k, v in sorted(stats.items()) if k.startswith("dlq ")}


def stats_table(stats: dict[str, float], produced: int, total: int) -> Table:
    table = Table("produced", "applied", "events/s", "consumer lag", "freshness", "dead letters", box=None)
    letters = dead_letters(stats)
    reasons = ", ".join(f"{reason} {count}" for reason, count in letters.items())
    table.add_row(f"{produced:,}/{total:,}", f"{int(stats.get('featurestream_stream_events_total', 0)):,}",
                  f"{stats.get('featurestream_stream_events_per_second', 0):,.0f}",
                  f"{int(stats.get('featurestream_stream_consumer_lag', 0)):,}",
                  f"{stats.get('featurestream_stream_freshness_seconds', 0):,.0f} s",
                  f"{sum(letters.values())} ({reasons})" if letters else "0")
    return table


def replay_live(console: Console, config: Settings, events_path: Path, topic: str, key_field: str,
                materializer: Background, metrics_port: int, event_log: Path | None,
                timeout_s: float = 300) -> tuple[ReplaySummary, dict[str, float]]:
    """Produce the events and show the materializer catching up, until it has handled every one and its
    event log (which the next step reads, and which a flush writes in the background) holds every applied one."""
    total = count_lines(events_path)
    with Live(stats_table({}, 0, total), console=console, refresh_per_second=4) as live:
        result = replay(iter_jsonl(events_path), topic, kafka_client_config(config), key_field,
                        progress=lambda done: live.update(stats_table(scrape(metrics_port), done, total)))
        deadline = time.monotonic() + timeout_s
        while True:
            stats = scrape(metrics_port)
            live.update(stats_table(stats, result.produced, total))
            applied = stats.get("featurestream_stream_events_total", 0)
            handled = applied + sum(dead_letters(stats).values())
            if handled >= result.produced and (event_log is None or logged_rows(event_log) >= applied):
                return result, stats
            materializer.check_alive()
            if time.monotonic() > deadline:
                raise DemoError(f"the materializer handled {handled:,.0f} of {result.produced:,} records (and logged "
                                f"{logged_rows(event_log) if event_log else 0:,} of the {applied:,.0f} applied) in "
                                f"{timeout_s:.0f} s; see {materializer.log_path}")
            time.sleep(0.25)
