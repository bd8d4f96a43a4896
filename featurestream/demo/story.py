"""`featurestream demo`: the whole story, end to end, from an empty checkout.

Services -> demo data -> feast apply -> batch features into Redis -> stream
materializer in the background and events replayed through Kafka with a live
display -> a labelled, point-in-time-correct training set -> a model, with AUC
on a later time split -> the serving API with that model -> a burst of
`/predict` calls -> a clean shutdown of what the demo started.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import joblib
import pyarrow.parquet as pq
import redis
from rich.console import Console
from rich.table import Table

from featurestream.cli.generate import run_generate
from featurestream.cli.repo import apply_repo, specs_table
from featurestream.config import Settings
from featurestream.demo.background import Background
from featurestream.demo.predictions import predict_burst
from featurestream.demo.streaming import dead_letters, replay_live, reset
from featurestream.demo.training import LABEL, labelled_rows, train
from featurestream.generate import GenerateConfig
from featurestream.services import services_down, services_up

SERVICE = "purchase_model_v1"
METRICS_PORT = 9465


@dataclass(frozen=True)
class DemoOptions:
    end: datetime
    events: int = 200_000
    users: int = 5_000
    items: int = 1_000
    training_rows: int = 40_000
    predictions: int = 1_000


def run_demo(console: Console, config: Settings, options: DemoOptions) -> dict[str, Any]:
    """Run every step, printing what each did and where its output is; returns the summary it prints last."""
    began = time.monotonic()
    summary: dict[str, Any] = {}
    step = _Steps(console, began)
    step("services (Kafka KRaft, Redis)")
    states = services_up(config)
    started = [state.name for state in states if state.started]
    console.print(", ".join(f"{s.name} at {s.address} ({'started now' if s.started else 'already running'})"
                            for s in states))
    background: list[Background] = []
    try:
        _story(step, config, options, summary, background)
    finally:
        for process in reversed(background):
            process.stop()
        if started:
            services_down(config, started)
            console.print(f"stopped what the demo started: {', '.join(started)}")
    summary["total seconds"] = round(time.monotonic() - began, 1)
    table = Table("step", "result", title="demo summary")
    for name, value in summary.items():
        table.add_row(name, str(value))
    console.print(table)
    return summary


def _story(step: _Steps, config: Settings, options: DemoOptions, summary: dict[str, Any],
           background: list[Background]) -> None:
    console = step.console
    data = config.repo_path / "data"
    logs = config.state_dir / "demo"
    step("demo data (seeded)")
    generated = run_generate(GenerateConfig(out_dir=data, end=options.end, users=options.users, items=options.items,
                                            events=options.events, malformed_fraction=0.001))
    step("feature definitions (validated, then feast apply)")
    specs = apply_repo(config.repo_path)
    console.print(specs_table(specs))
    console.print(f"registry: {data / 'registry.db'}")
    reset(config, specs)

    step("batch features into Redis (Feast's layout)")
    from materializers.batch.runner import materialize

    client = redis.Redis.from_url(config.redis_url)
    runs = materialize(specs, config.repo_path, client, None, end_ms=int(time.time() * 1000), start_ms=0)
    for run in runs:
        console.print(f"{run.view}: newest row of {run.rows:,} entities written to Redis in {run.seconds:.2f} s")
    summary["batch rows materialized"] = sum(run.rows for run in runs)

    step("stream materializer (background) and events replayed through Kafka")
    materializer = Background("stream materializer", ["materialize", "stream", "--metrics-port", str(METRICS_PORT),
                                                      "--flush-interval", "1"], logs / "materializer.log",
                              {"FEATURESTREAM_REPO": str(config.repo_path)})
    background.append(materializer)
    source = next(iter(specs.stream_views.values())).source
    event_log = Path(source.event_log_path) if source.event_log_path else None
    replayed, stats = replay_live(console, config, generated.events_path, source.topic, "user_id", materializer,
                                  METRICS_PORT, event_log)
    applied = int(stats.get("featurestream_stream_events_total", 0))
    letters = dead_letters(stats)
    console.print(f"replayed {replayed.produced:,} records in {replayed.seconds:.1f} s; applied {applied:,}, "
                  f"dead letters {letters}; materializer log {materializer.log_path}; "
                  f"event log {source.event_log_path}")
    summary["events replayed"] = replayed.produced
    summary["events applied"] = applied
    summary["dead letters"] = letters

    step("labelled training set (point in time, from the event log)")
    from featurestream.offline.export import export

    began = time.monotonic()
    rows = labelled_rows(Path(source.event_log_path or ""), options.training_rows)
    training = export(config.repo_path, rows, feature_service=SERVICE)
    training_path = data / "training" / f"{SERVICE}.parquet"
    training_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(training, training_path)
    features = [name for name in training.column_names if name not in rows.column_names]
    positives = sum(training[LABEL].to_pylist())
    console.print(f"{training.num_rows:,} rows x {len(features)} features of {SERVICE} "
                  f"(label {LABEL}: {positives:,} positive) in {time.monotonic() - began:.1f} s -> {training_path}")
    summary["training rows"] = training.num_rows

    step("model (LightGBM), evaluated on a later time split")
    trained = train(training, features)
    model_path = data / "models" / f"{SERVICE}.joblib"
    model_path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(trained.model, model_path)
    console.print(f"trained on {trained.train_rows:,} rows before {trained.split_at:%Y-%m-%d %H:%M} UTC, "
                  f"tested on {trained.test_rows:,} after; {len(trained.features)} features; "
                  f"positive rate {trained.positive_rate:.1%}")
    console.print(f"[bold]AUC on the later split: {trained.auc:.3f}[/]; model -> {model_path}")
    summary["AUC (later time split)"] = round(trained.auc, 3)

    step("serving API with the model")
    port = _free_port()
    server = Background("serving API", ["serve", "--port", str(port), "--model", f"{SERVICE}={model_path}"],
                        logs / "serve.log", {"FEATURESTREAM_REPO": str(config.repo_path)})
    background.append(server)
    server.wait_http(f"http://127.0.0.1:{port}/health", 60)
    console.print(f"serving on http://127.0.0.1:{port} (log {server.log_path})")

    step(f"{options.predictions:,} /predict calls")
    latest = rows.slice(max(0, rows.num_rows - options.predictions)).to_pylist()
    burst = predict_burst(port, SERVICE, latest)
    p50, p90, p99 = (burst.percentile(q) for q in (0.5, 0.9, 0.99))
    console.print(f"{len(burst.latencies_ms):,} calls, one at a time over one connection: p50 {p50:.2f} ms, "
                  f"p90 {p90:.2f} ms, p99 {p99:.2f} ms ({burst.per_second:,.0f}/s)")
    samples = Table("user", "item", "candidate price", "P(purchase in 10 min)", title="sample predictions")
    for request, answer in burst.samples:
        probability = answer.get("probabilities", [[None, None]])[0][1]
        samples.add_row(str(request["user_id"]), str(request["item_id"]), f"{request['candidate_price']:.2f}",
                        f"{probability:.3f}" if probability is not None else "-")
    console.print(samples)
    summary["/predict latency ms (p50 / p99)"] = f"{p50:.2f} / {p99:.2f}"


class _Steps:
    """Numbered section headers, each with the time the demo has taken so far."""

    def __init__(self, console: Console, began: float) -> None:
        self.console = console
        self.began = began
        self.number = 0

    def __call__(self, title: str) -> None:
        self.number += 1
        self.console.rule(f"{self.number}. {title}  [dim]({time.monotonic() - self.began:.0f} s)[/]")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
