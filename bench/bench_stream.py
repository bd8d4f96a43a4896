"""Stream materializer benchmarks: throughput over pre-produced events, produce-to-Redis freshness, Feast's write path.

Prints tables; asserts nothing. Run with `make bench` or `.venv/bin/python bench/bench_stream.py [--events N]`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pandas as pd
import redis
from confluent_kafka import Producer

from bench.common import applied_repo_copy, demo_views, machine, new_topic, percentile, ready_settings
from featurestream.config import Settings, kafka_client_config
from featurestream.generate import GenerateConfig, generate_demo_data
from featurestream.online.keys import state_key
from featurestream.replay import iter_jsonl, replay
from materializers.stream import metrics
from materializers.stream.redis_sink import RedisSink
from materializers.stream.runner import StreamMaterializer, StreamOptions
from materializers.stream.tile_batch import TileBatch


def throughput(settings: Settings, events: int) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="fs-bench-"))
    summary = generate_demo_data(GenerateConfig(out_dir=work, end=datetime.now(UTC).replace(minute=0, second=0,
                                 microsecond=0), events=events, users=50_000, items=5_000))
    topic = new_topic(settings, 4)
    produced = replay(iter_jsonl(summary.events_path), topic, kafka_client_config(settings), "user_id")
    print(f"  produced {produced.produced:,} events into {topic} (4 partitions) at {produced.rate:,.0f}/s")
    project = f"bench{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(settings.redis_url)
    materializer = StreamMaterializer(project, demo_views(topic, work / "event_log"), client, StreamOptions(
        group=f"bench-{topic}", kafka_config=kafka_client_config(settings), idle_exit_s=2.0))
    marks: dict[str, float] = {}

    def watch() -> None:
        # Only the two counters are read: a whole-registry collect (the process collector reads /proc) every
        # 50 ms took 3% of the run's CPU, under the GIL the materializer needs.
        while "done" not in marks:
            handled = sum(sample.value for metric in (metrics.EVENTS, metrics.DEAD_LETTERS)
                          for family in metric.collect() for sample in family.samples
                          if sample.name.endswith("_total") and sample.labels.get("topic") == topic)
            if handled and "first" not in marks:
                marks["first"] = time.perf_counter()
            if handled >= produced.produced:
                marks["done"] = time.perf_counter()
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    began = time.perf_counter()
    materializer.run()
    marks.setdefault("done", time.perf_counter())
    steady = marks["done"] - marks.get("first", began)
    return {"events": produced.produced, "seconds": steady, "rate": produced.produced / steady,
            "wall_with_startup": marks["done"] - began}


def _run_materializer(project: str, topic: str, redis_url: str, kafka: dict[str, str], stop_at: float) -> None:
    """The freshness run's materializer, with the CLI's defaults (event log included); the parent stops it
    with SIGTERM, `stop_at` is a backstop."""
    client = redis.Redis.from_url(redis_url)
    event_log = Path(tempfile.mkdtemp(prefix="fs-fresh-")) / "event_log"
    materializer = StreamMaterializer(project, demo_views(topic, event_log), client, StreamOptions(
        group=f"fresh-{topic}", kafka_config=kafka))
    backstop = threading.Timer(max(stop_at - time.time(), 0), materializer.stop)
    backstop.daemon = True
    backstop.start()
    materializer.run()


PROBE_BASE = 10_000_000  # probe users have 8-digit ids, the others at most 4 digits
WARMUP_S = 2.0  # freshness is also reported for the probes sent after this much traffic


def freshness(settings: Settings, rate: int, seconds: float) -> dict[str, float]:
    """Every 10th event is a probe for a user nobody else uses: its key is written exactly when it is applied.

    Redis announces each write of a probe key (keyspace notifications, switched on for the run) and the
    time is taken on receipt, after the write: a probe never looks fresher than it was, and nothing polls
    Redis, so the measurement takes no Redis time from the materializer.
    """
    topic = new_topic(settings, 4)
    project = f"fresh{uuid.uuid4().hex[:8]}"
    kafka = kafka_client_config(settings)
    # Spawned, not forked: the materializer starts as `featurestream materialize stream` would, without
    # this process's heap (after the throughput part, a million events' worth) or its threads.
    child = multiprocessing.get_context("spawn").Process(
        target=_run_materializer, args=(project, topic, settings.redis_url, kafka, time.time() + seconds + 300))
    child.start()
    client = redis.Redis.from_url(settings.redis_url)
    producer = Producer({**kafka, "linger.ms": 5, "enable.idempotence": True})
    # Warm up: the consumer joins its group before we start the clock.
    producer.produce(topic, orjson.dumps(_event(0, 1)))
    producer.flush()
    warm_key = state_key(project, "user_activity", ("user_id",), (1,))
    deadline = time.time() + 60
    while not client.exists(warm_key):
        if not child.is_alive() or time.time() > deadline:
            child.terminate()
            raise RuntimeError(f"the materializer did not apply the warm-up event (exit code {child.exitcode})")
        time.sleep(0.05)
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    previous = client.config_get("notify-keyspace-events")["notify-keyspace-events"]
    client.config_set("notify-keyspace-events", "Kh")
    prefix = f"__keyspace@{client.connection_pool.connection_kwargs.get('db', 0)}__:"
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(prefix + state_key(project, "user_activity", ("user_id",), ("1???????",)))
    done = threading.Event()

    def listen() -> None:
        while not done.is_set():
            message = pubsub.get_message(timeout=0.1)
            if message is not None:
                now = time.perf_counter()
                seen.setdefault(message["channel"].decode()[len(prefix):], now)

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    try:
        began = time.perf_counter()
        total = int(rate * seconds)
        for i in range(total):
            pause = began + i / rate - time.perf_counter()
            if pause > 0.001:  # a wake-up per event would cost more CPU than producing it
                time.sleep(pause)
            probe = i % 10 == 0
            user = PROBE_BASE + i if probe else 1 + i % 5_000
            producer.produce(topic, orjson.dumps(_event(i, user)), key=str(user).encode())
            if probe:
                sent[state_key(project, "user_activity", ("user_id",), (user,))] = time.perf_counter()
            producer.poll(0)
        ended = time.perf_counter()
        producer.flush()
        deadline = time.perf_counter() + 30
        while len(seen) < len(sent) and time.perf_counter() < deadline:
            time.sleep(0.1)
    finally:
        done.set()
        listener.join(5)
        pubsub.close()
        client.config_set("notify-keyspace-events", previous)
        child.terminate()  # SIGTERM: the materializer finishes its batch and exits
    child.join(120)
    latencies = [(seen[k] - sent[k]) * 1000 for k in sent if k in seen]
    # The first seconds are the process's warm-up (every user new to it, first flushes): reported apart.
    steady = [(seen[k] - sent[k]) * 1000 for k in sent if k in seen and sent[k] >= began + WARMUP_S]
    return {"rate": rate, "achieved_rate": total / (ended - began), "probes": len(sent),
            "seen": len(latencies), "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
            "max_ms": max(latencies, default=float("nan")), "steady_p50_ms": percentile(steady, 50),
            "steady_p99_ms": percentile(steady, 99)}


def _event(i: int, user: int) -> dict[str, object]:
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    kind = "purchase" if i % 20 == 0 else "view"
    return {"event_id": f"f{i}", "user_id": user, "item_id": 1 + i % 1000, "event_type": kind,
            "price": 10.0 + i % 90, "event_timestamp": now}


def feast_write_path(settings: Settings, rows: int) -> dict[str, float]:
    """Feast's own ingestion: `write_to_online_store` of user_activity rows with the aggregates precomputed."""
    import warnings

    from feast import FeatureStore

    warnings.simplefilter("ignore")
    repo, _ = applied_repo_copy(f"feast-{uuid.uuid4().hex[:6]}")
    store = FeatureStore(repo_path=str(repo))
    now = pd.Timestamp.now(tz="UTC")
    frame = pd.DataFrame({
        "user_id": [1 + i % 50_000 for i in range(rows)],
        "event_timestamp": [now] * rows,
        "events_5m": [i % 7 for i in range(rows)], "events_1h": [i % 30 for i in range(rows)],
        "events_24h": [i % 90 for i in range(rows)], "purchase_value_1h": [float(i % 500) for i in range(rows)],
        "purchase_value_24h": [float(i % 900) for i in range(rows)],
        "mean_viewed_price_1h": [float(i % 300) for i in range(rows)],
        "max_price_24h": [float(i % 999) for i in range(rows)], "last_item_id": [i % 5_000 for i in range(rows)],
    })
    chunk = 10_000
    began = time.perf_counter()
    for start in range(0, rows, chunk):
        store.write_to_online_store("user_activity", frame.iloc[start:start + chunk])
    seconds = time.perf_counter() - began
    return {"rows": rows, "seconds": seconds, "rate": rows / seconds}


def update_cost(settings: Settings, updates: int) -> dict[str, float]:
    """Real-time traffic on one user: an event every 30 s of event time, each its own micro-batch. Redis's
    time per compare-and-set call (INFO commandstats) once the key holds hours of tiles, and the
    writer's own time per update (merging, pruning, encoding), both per key."""
    client = redis.Redis.from_url(settings.redis_url)
    view = next(v for v in demo_views(f"cost-{uuid.uuid4().hex[:6]}", None) if v.name == "user_activity")
    project = f"cost{uuid.uuid4().hex[:8]}"
    key = state_key(project, view.name, view.join_keys, (1,))
    sink = RedisSink(client)
    start_ms = int(time.time() * 1000) - updates * 30_000
    writer_s = 0.0
    try:
        for i in range(updates):
            if i == updates // 2:
                client.config_resetstat()
                writer_s = 0.0
            batch = TileBatch(project, view)
            batch.events.add((1,), 0, i, start_ms + i * 30_000, {
                "event_id": f"e{i}", "item_id": i % 50, "price": 2.5, "viewed_price": 2.5,
                "purchase_value": 3.0 if i % 7 == 0 else None})
            began = time.perf_counter()
            sink.write([batch], [])
            writer_s += time.perf_counter() - began
        calls = client.info("commandstats")["cmdstat_evalsha"]
        size = len(client.hget(key, "s") or b"")
    finally:
        client.delete(key)
    return {"us_per_update": calls["usec_per_call"], "bytes": size,
            "writer_us": writer_s / (updates - updates // 2) * 1e6 - calls["usec_per_call"]}


PARTS = ("throughput", "freshness", "update-cost", "feast")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--feast-rows", type=int, default=100_000)
    parser.add_argument("--fresh-seconds", type=float, default=15.0)
    parser.add_argument("--only", action="append", choices=PARTS,
                        help="run only this part (repeatable); all parts by default")
    args = parser.parse_args()
    parts = set(args.only or PARTS)
    settings = ready_settings()
    print(f"machine: {machine()}")
    if "throughput" in parts:
        print(f"\n## throughput: {args.events:,} demo events, 4 partitions, all demo stream views, one process")
        ours = throughput(settings, args.events)
        print(f"  {ours['events']:,} events in {ours['seconds']:.2f} s = {ours['rate']:,.0f} events/s "
              f"({ours['wall_with_startup']:.2f} s including group join)")
    if "freshness" in parts:
        print("\n## freshness: produce time -> value written in Redis (every 10th event probed, keyspace notifications)")
        print(f"  | rate/s | achieved | probes | p50 ms | p99 ms | max ms | after {WARMUP_S:.0f} s: p50 ms | p99 ms |")
        for rate in (5_000, 20_000):
            fresh = freshness(settings, rate, args.fresh_seconds)
            print(f"  | {rate:,} | {fresh['achieved_rate']:,.0f} | {fresh['seen']}/{fresh['probes']} | "
                  f"{fresh['p50_ms']:.1f} | {fresh['p99_ms']:.1f} | {fresh['max_ms']:.1f} | "
                  f"{fresh['steady_p50_ms']:.1f} | {fresh['steady_p99_ms']:.1f} |")
    if "update-cost" in parts:
        cost = update_cost(settings, 3_600)
        print(f"\n## time per key update, real-time traffic (one event per 30 s per user, 30 h of it)\n"
              f"  Redis: {cost['us_per_update']:.1f} us per compare-and-set call; the state is {cost['bytes']:,} bytes\n"
              f"  the writer, besides waiting for Redis: {cost['writer_us']:.1f} us (round trip included)")
    if "feast" not in parts:
        return
    print(f"\n## Feast's write path (write_to_online_store, aggregates precomputed), {args.feast_rows:,} rows")
    feast = feast_write_path(settings, args.feast_rows)
    print(f"  feast: {feast['rate']:,.0f} rows/s")
    if "throughput" in parts:
        print(f"  featurestream: {ours['rate']:,.0f} events/s (each event updates 3 views) "
              f"-> ratio {ours['rate'] / feast['rate']:.1f}x")


if __name__ == "__main__":
    main()
