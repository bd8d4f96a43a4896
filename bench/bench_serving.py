"""Serving benchmarks: featurestream serve against feast serve, same Redis, same worker count, same batch requests.

Sets up a private project (5 batch views x 10 features over USERS users written by Feast's own online
write path, plus the demo's windowed and session views fed through Kafka by the real stream materializer),
starts both servers with 2 workers, and drives them with wrk (bench/loadgen.py) on loopback at concurrency
1, 8 and 32. Each Feast comparison runs both servers in turn several times and keeps each one's best run.
Prints tables; asserts nothing. Run with `make bench` or `.venv/bin/python -m bench.bench_serving`.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pandas as pd
import redis
from confluent_kafka import Producer

from bench.common import applied_repo_copy, machine, new_topic, ready_settings
from bench.loadgen import LoadResult, load
from featurestream.config import Settings, kafka_client_config
from featurestream.definitions import load_repo
from materializers.stream.rebuild import delete_matching

ROUTE = "/get-online-features"
DB = 10  # a private Redis database; the run removes its own project's keys at the end
VIEWS, FEATURES = 5, 10
BATCH_VIEWS = "\n".join(
    [f'''"""Benchmark batch views: {VIEWS} x {FEATURES} numeric features per user."""

from datetime import timedelta

from feast import FeatureView, Field, FileSource
from feast.types import Float64

from entities import user
'''] + [f'''
bench_v{v} = FeatureView(
    name="bench_v{v}", entities=[user], ttl=timedelta(days=7), online=True,
    schema=[{", ".join(f'Field(name="f{f}", dtype=Float64)' for f in range(FEATURES))}],
    source=FileSource(name="bench_v{v}_source", path="bench_v{v}.parquet", timestamp_field="ts"),
)''' for v in range(VIEWS)])
BATCH_REFS = [f"bench_v{v}:f{f}" for v in range(VIEWS) for f in range(FEATURES)]
MIXED_REFS = (  # 50 features: 35 batch, 8 windowed, 3 windowed of the item, 4 session
    [f"bench_v{v}:f{f}" for v in range(3) for f in range(FEATURES)] + [f"bench_v3:f{f}" for f in range(5)]
    + [f"user_activity:{n}" for n in ("events_5m", "events_1h", "events_24h", "purchase_value_1h",
                                      "purchase_value_24h", "mean_viewed_price_1h", "max_price_24h", "last_item_id")]
    + ["item_activity:views_5m", "item_activity:views_1h", "item_activity:purchases_1h"]
    + [f"user_session:{n}" for n in ("session_start", "session_event_count", "session_duration_s",
                                     "session_purchase_value")])


def write_batch(repo: Path, users: int) -> float:
    from feast import FeatureStore

    sys.path.insert(0, str(repo))  # the registry's stream udfs unpickle by reference to the repo's modules
    store = FeatureStore(repo_path=str(repo))
    began = time.perf_counter()
    now = datetime.now(UTC)
    rng = random.Random(1)
    for v in range(VIEWS):
        frame = pd.DataFrame({f"f{f}": [rng.random() * 100 for _ in range(users)] for f in range(FEATURES)})
        frame["user_id"] = range(users)
        frame["ts"] = now - timedelta(hours=1)
        store.write_to_online_store(f"bench_v{v}", frame)
    return time.perf_counter() - began


def write_stream(settings: Settings, repo: Path, project: str, topic: str, events: int, active: list[int],
                 client: redis.Redis) -> float:
    """Events of the active users over the last two hours, through Kafka and the real stream materializer."""
    from materializers.stream.runner import StreamMaterializer, StreamOptions

    rng = random.Random(2)
    now_ms = int(time.time() * 1000)
    producer = Producer({**kafka_client_config(settings), "linger.ms": 20})
    for i in range(events):
        ts = now_ms - 2 * 3_600_000 + i * (2 * 3_600_000 // events)
        kind = rng.choice(["view", "view", "view", "click", "add_to_cart", "purchase"])
        event = {"event_id": f"b{i}", "user_id": rng.choice(active), "item_id": rng.randrange(2000),
                 "event_type": kind, "price": round(rng.uniform(1, 500), 2),
                 "event_timestamp": datetime.fromtimestamp(ts / 1000, UTC).isoformat()}
        producer.produce(topic, orjson.dumps(event), key=str(event["user_id"]).encode())
        if i % 5000 == 0:
            producer.poll(0)
    producer.flush(60)
    began = time.perf_counter()
    views = list(load_repo(repo).stream_views.values())
    StreamMaterializer(project, views, client, StreamOptions(
        group=f"bench-{topic}", kafka_config=kafka_client_config(settings), idle_exit_s=2.0, event_log=False)).run()
    return time.perf_counter() - began


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(stack: ExitStack, command: list[str], cwd: Path, env: dict[str, str], port: int) -> None:
    process = subprocess.Popen(command, cwd=cwd, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)

    def stop() -> None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)

    stack.callback(stop)
    deadline = time.monotonic() + 180
    body = orjson.dumps({"features": BATCH_REFS[:1], "entities": {"user_id": [1]}})
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/get-online-features", body,
                                             {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"{command[0]} exited with {process.returncode}") from None
            time.sleep(0.5)
    raise RuntimeError(f"{' '.join(command)} did not answer within 180 s")


def bodies(refs: list[str], entities: int, users: list[int], count: int, with_items: bool) -> list[bytes]:
    rng = random.Random(entities)
    out = []
    for _ in range(count):
        chosen = [rng.choice(users) for _ in range(entities)]
        keys = {"user_id": chosen, **({"item_id": [rng.randrange(2000) for _ in chosen]} if with_items else {})}
        out.append(orjson.dumps({"features": refs, "entities": keys, "full_feature_names": True}))
    return out


def row(label: str, server: str, concurrency: int, result: LoadResult) -> dict[str, object]:
    """One line of the table, printed as soon as it is measured."""
    r = {"scenario": label, "server": server, "conc": concurrency, "p50_ms": result.p50_ms,
         "p99_ms": result.p99_ms, "req_s": result.rate, "n": result.requests, "errors": result.errors}
    print(f"  {r['scenario']:<22} {r['server']:<14} {r['conc']:>4} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
          f"{r['req_s']:>9.0f} {r['n']:>7} {r['errors']:>4}", flush=True)
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000, help="users with batch rows")
    parser.add_argument("--events", type=int, default=30_000, help="stream events (over 5,000 active users)")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3, help="runs per server of each Feast comparison (best kept)")
    args = parser.parse_args()

    settings = ready_settings()
    endpoint = settings.redis_endpoint
    topic = new_topic(settings, 2, prefix="bench-serving")
    repo, project = applied_repo_copy(topic, {"bench_features.py": BATCH_VIEWS}, f"{endpoint},db={DB}")
    client = redis.Redis(host=endpoint.host, port=endpoint.port, db=DB)
    print(f"serving benchmark on {machine()}; project {project}, Redis db {DB}, {args.workers} workers per server")
    active = random.Random(3).sample(range(args.users), 5000)
    with ExitStack() as stack:
        stack.callback(cleanup, client, project)
        print(f"  batch rows: {VIEWS} views x {args.users:,} users written by Feast in {write_batch(repo, args.users):.1f} s")
        took = write_stream(settings, repo, project, topic, args.events, active, client)
        print(f"  stream state: {args.events:,} events over {len(active):,} users materialized in {took:.1f} s")
        ours, feast = free_port(), free_port()
        start(stack, [str(Path(sys.executable).with_name("featurestream")), "serve", "--port", str(ours),
                      "--workers", str(args.workers)], repo,
              {"FEATURESTREAM_REPO": str(repo), "FEATURESTREAM_REGISTRY_REFRESH_S": "3600"}, ours)
        start(stack, [str(Path(sys.executable).with_name("feast")), "serve", "-p", str(feast), "-w",
                      str(args.workers), "-r", "3600", "--no-access-log", "--max-requests", "1000000"], repo, {}, feast)
        print(f"  {'scenario':<22} {'server':<14} {'conc':>4} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>9} {'n':>7} "
              f"{'err':>4}")
        for label, refs, entities, with_items in (("mixed 1 x 50", MIXED_REFS, 1, True),
                                                  ("mixed 100 x 50", MIXED_REFS, 100, True)):
            payloads = bodies(refs, entities, active, 200, with_items)
            for concurrency in (1, 8, 32):
                row(label, "featurestream", concurrency, load(ours, ROUTE, payloads, concurrency, args.seconds))
        ratios = []
        print(f"  (each server's best of {args.runs} runs below: which worker takes a new connection varies by run)")
        for label, entities in (("batch 1 x 50", 1), ("batch 100 x 50", 100)):
            shared = bodies(BATCH_REFS, entities, list(range(args.users)), 200, False)
            for concurrency in (1, 8, 32):
                runs = [(load(ours, ROUTE, shared, concurrency, args.seconds),
                         load(feast, ROUTE, shared, concurrency, args.seconds)) for _ in range(args.runs)]
                mine = row(label, "featurestream", concurrency, max((m for m, _ in runs), key=_rate))
                theirs = row(label, "feast serve", concurrency, max((t for _, t in runs), key=_rate))
                ratios.append((label, concurrency, mine, theirs))
    print("\n  featurestream vs feast serve, same batch requests (higher is better for featurestream):")
    print(f"  {'scenario':<22} {'conc':>4} {'req/s x':>9} {'p50 x':>8} {'p99 x':>8}")
    for label, concurrency, mine, theirs in ratios:
        if not theirs["n"]:
            print(f"  {label:<22} {concurrency:>4}   feast serve answered no request in the run")
            continue
        print(f"  {label:<22} {concurrency:>4} {mine['req_s'] / theirs['req_s']:>9.1f} "
              f"{theirs['p50_ms'] / mine['p50_ms']:>8.1f} {theirs['p99_ms'] / mine['p99_ms']:>8.1f}")


def _rate(result: LoadResult) -> float:
    return result.rate


def cleanup(client: redis.Redis, project: str) -> None:
    for pattern in (f"fs:{project}:*", f"*{project}"):  # stream state, then Feast's keys (they end with the project)
        delete_matching(client, pattern)


if __name__ == "__main__":
    main()
