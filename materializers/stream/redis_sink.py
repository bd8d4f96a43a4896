"""Writes one micro-batch to Redis: fenced tile merges and session compare-and-set, pipelined.

Keys go many to a script call (each key still updated atomically on its own),
grouped by hash slot on Redis Cluster. A normal batch costs two round trips
(tile merges with session reads, then session writes); conflicts, which happen
only after crashes or rebalances, cost more but never double count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import redis
from msgspec import msgpack
from redis.cluster import RedisCluster
from redis.crc import key_slot

from featurestream.online.scripts import SESSION_CAS, TILE_MERGE
from materializers.stream.metrics import REDIS_RETRIES
from materializers.stream.session_batch import SessionBatch
from materializers.stream.tile_batch import Segment, TileBatch

log = logging.getLogger(__name__)
PARTLY_APPLIED = 2
MAX_CAS_ROUNDS = 50
KEYS_PER_CALL = 200
T = TypeVar("T")


class RedisSink:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._cluster = isinstance(client, RedisCluster)
        self._tile_merge = client.register_script(TILE_MERGE)
        self._session_cas = client.register_script(SESSION_CAS)

    def write(self, tiles: list[TileBatch], sessions: list[SessionBatch]) -> None:
        """Apply the batch, retrying with backoff while Redis is unreachable (safe: every write is fenced)."""
        delay = 0.1
        while True:
            try:
                self._write_once(tiles, sessions)
                return
            except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.BusyLoadingError) as exc:
                REDIS_RETRIES.inc()
                log.warning("Redis unavailable (%s); retrying in %.1f s", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _groups(self, items: Sequence[T], key_of: Any) -> Iterator[list[T]]:
        """Chunks of items whose keys one script call may touch (one hash slot each on a cluster)."""
        if self._cluster:
            by_slot: dict[int, list[T]] = {}
            for item in items:
                by_slot.setdefault(key_slot(key_of(item).encode()), []).append(item)
            buckets: Iterator[list[T]] = iter(by_slot.values())
        else:
            buckets = iter([list(items)])
        for bucket in buckets:
            for start in range(0, len(bucket), KEYS_PER_CALL):
                yield bucket[start:start + KEYS_PER_CALL]

    def _write_once(self, tiles: list[TileBatch], sessions: list[SessionBatch]) -> None:
        pipe = self.client.pipeline(transaction=False)
        tile_groups = []
        for batch in tiles:
            for group in self._groups(batch.calls(), lambda call: call[0]):
                updates = msgpack.encode([update for _, update, _ in group])
                self._tile_merge(keys=[key for key, _, _ in group],
                                 args=[batch.expiry_ms, batch.prune_every_ms, batch.keep, updates], client=pipe)
                tile_groups.append((batch, group))
        session_entities = [(batch, entity) for batch in sessions for entity in batch.entities()]
        for batch, entity in session_entities:
            pipe.hmget(batch.key(entity), batch.read_fields(entity))
        results = pipe.execute()
        self._resend_partly_applied(tile_groups, results[: len(tile_groups)])
        self._write_sessions(session_entities, results[len(tile_groups):])

    def _resend_partly_applied(self, groups: list[tuple[TileBatch, list[Any]]], results: list[list[list[int]]]) -> None:
        resend: list[tuple[TileBatch, str, int, Segment]] = []
        for (batch, group), per_key in zip(groups, results, strict=True):
            for (key, _, segments), statuses in zip(group, per_key, strict=True):
                for (partition, segment), status in zip(segments, statuses, strict=True):
                    if status == PARTLY_APPLIED:
                        resend.append((batch, key, partition, segment))
        if not resend:
            return
        pipe = self.client.pipeline(transaction=False)
        for batch, key, partition, segment in resend:
            update = msgpack.encode([batch.single_event_update(partition, segment)])
            self._tile_merge(keys=[key], args=[batch.expiry_ms, batch.prune_every_ms, batch.keep, update],
                             client=pipe)
        pipe.execute()

    def _write_sessions(self, entities: list[tuple[SessionBatch, Any]], reads: list[list[Any]]) -> None:
        pending = list(zip(entities, reads, strict=True))
        for _ in range(MAX_CAS_ROUNDS):
            updates = []
            for (batch, entity), read in pending:
                key_args = batch.update(entity, read)
                if key_args is not None:
                    updates.append((batch, entity, key_args))
            if not updates:
                return
            pipe = self.client.pipeline(transaction=False)
            sent = []
            for group in self._groups(updates, lambda update: update[0].key(update[1])):
                by_batch: dict[int, list[tuple[SessionBatch, Any, list[Any]]]] = {}
                for update in group:
                    by_batch.setdefault(id(update[0]), []).append(update)
                for same in by_batch.values():
                    args: list[Any] = [same[0][0].expiry_ms]
                    for _, _, key_args in same:
                        args += key_args
                    self._session_cas(keys=[b.key(e) for b, e, _ in same], args=args, client=pipe)
                    sent.append(same)
            written = pipe.execute()
            retry = [(b, e) for same, oks in zip(sent, written, strict=True)
                     for (b, e, _), ok in zip(same, oks, strict=True) if not ok]
            if not retry:
                return
            pipe = self.client.pipeline(transaction=False)
            for batch, entity in retry:
                pipe.hmget(batch.key(entity), batch.read_fields(entity))
            pending = list(zip(retry, pipe.execute(), strict=True))
        raise RuntimeError(f"session state of {len(pending)} entities kept changing under us; another writer?")
