"""Writes one micro-batch to Redis: a compare-and-set of each entity's state, fenced by offsets.

Keys go many to a script call (each key still compared and set on its own),
grouped by hash slot on Redis Cluster. Commands stream out while the rest are
built (`commands.CommandStream`). A normal batch costs one round trip: the
compare-and-set of the keys this process wrote last (their state is cached), and
reads of the others, which are written in a second round trip. Conflicts, which
happen only after crashes, rebalances or a second writer, cost more round trips
but never double count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import NoScriptError

from featurestream.online.scripts import STATE_CAS
from materializers.stream.commands import command_stream
from materializers.stream.metrics import REDIS_RETRIES
from materializers.stream.state_batch import Entity, StateBatch
from materializers.stream.state_cache import StateCache, StoredState

log = logging.getLogger(__name__)
MAX_CAS_ROUNDS = 50
KEYS_PER_CALL = 200
# (batch, entity, key, what Redis holds) of a key ready for its compare-and-set
Ready = tuple[StateBatch, Entity, str, StoredState]
ToRead = tuple[StateBatch, Entity, str]
# a Ready's, then the new state, its encoding and the last offset applied per partition
Update = tuple[StateBatch, Entity, str, StoredState, Any, bytes, dict[int, int]]


class RedisSink:
    """One writer's path to Redis. Not for concurrent use: a write updates cached states in place before
    their compare-and-set, so two writes at once through one sink could count an event twice (separate
    sinks, as separate processes have, are safe)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._cluster = isinstance(client, RedisCluster)
        self._cas = client.register_script(STATE_CAS)
        self._cache = StateCache()

    def write(self, *batches: Sequence[StateBatch]) -> None:
        """Apply the view batches, retrying with backoff while Redis is unreachable (safe: every write is fenced)."""
        views = [batch for group in batches for batch in group]
        delay = 0.1
        load_script = False
        while True:
            try:
                if load_script:
                    self.client.script_load(self._cas.script)
                self._write_once(views)
                return
            except NoScriptError:  # a restarted or flushed Redis: load the script, then send it all again
                load_script = True
            except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.BusyLoadingError) as exc:
                REDIS_RETRIES.inc()
                log.warning("Redis unavailable (%s); retrying in %.1f s", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
            except BaseException:
                self._cache.clear()
                raise
            # The cached states were updated in place for writes Redis may or may not hold: forget them all.
            self._cache.clear()

    def _write_once(self, batches: list[StateBatch]) -> None:
        to_read: list[ToRead] = []
        ready: list[Ready] = []
        for batch in batches:
            for entity in batch.events.entities():
                key = batch.key(entity)
                stored = self._cache.get(key, batch.events.partitions(entity))
                if stored is None:
                    to_read.append((batch, entity, key))
                else:
                    ready.append((batch, entity, key, stored))
        version = self._cache.new_version()  # one per write: a key is written at most once by it
        for _ in range(MAX_CAS_ROUNDS):
            with command_stream(self.client) as commands:
                for batch, entity, key in to_read:
                    commands.send("HMGET", key, *batch.read_fields(entity))
                cas = self._send_cas(commands, ready, version)
                replies = _raise_errors(commands.replies())
            reads = replies[:len(to_read)]
            failed = self._settle_cas(cas, replies[len(to_read):], version)
            ready = [(batch, entity, key, batch.stored(entity, read))
                     for (batch, entity, key), read in zip(to_read, reads, strict=True)]
            to_read = failed
            if not ready and not to_read:
                return
        raise RuntimeError(f"the state of {len(to_read)} entities kept changing under us; another writer?")

    def _send_cas(self, commands: Any, ready: list[Ready], version: str) -> list[list[Update]]:
        """Send the compare-and-set of every key with events to apply, a call as soon as it is full (Redis
        runs it while the next is built); returns the sent calls' updates."""
        sent = []
        pending: dict[tuple[int, int], list[Update]] = {}  # (hash slot on a cluster, expiry) -> a call's updates
        for batch, entity, key, stored in ready:
            new = batch.update(entity, stored)
            if new is None:
                continue
            bucket = (key_slot(key.encode()) if self._cluster else 0, batch.expiry_ms)
            call = pending.get(bucket)
            if call is None:
                call = pending[bucket] = []
            call.append((batch, entity, key, stored, *new))
            if len(call) >= KEYS_PER_CALL:
                self._send_call(commands, call, bucket[1], version)
                sent.append(call)
                pending[bucket] = []
        for (_, expiry_ms), call in pending.items():
            if call:
                self._send_call(commands, call, expiry_ms, version)
                sent.append(call)
        return sent

    def _send_call(self, commands: Any, call: list[Update], expiry_ms: int, version: str) -> None:
        args: list[Any] = [expiry_ms, version]
        for batch, _, _, stored, _, blob, offsets in call:
            args += (stored.version, blob, len(offsets))
            for partition, offset in sorted(offsets.items()) if len(offsets) > 1 else offsets.items():
                args += (batch.offset_field(partition), offset)
        commands.send("EVALSHA", self._cas.sha, len(call), *(update[2] for update in call), *args)

    def _settle_cas(self, sent: list[list[Update]], replies: list[list[int]], version: str) -> list[ToRead]:
        """Cache what was written; returns the keys somebody else wrote first, to read and retry."""
        failed = []
        cache = self._cache
        for call, oks in zip(sent, replies, strict=True):
            for (batch, entity, key, stored, state, blob, offsets), ok in zip(call, oks, strict=True):
                if ok:
                    stored.applied.update(offsets)  # the entry is replaced: updating in place is safe
                    cache.put(key, StoredState(version, state, stored.applied, len(blob)))
                else:
                    cache.drop(key)
                    failed.append((batch, entity, key))
        return failed


def _raise_errors(replies: list[Any]) -> list[Any]:
    """The replies, once none is an error (the first one found is raised; fenced writes make a retry safe)."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies
