"""Writes one micro-batch to Redis: fenced tile merges and session compare-and-set.

Keys go many to a script call (each key still updated atomically on its own),
grouped by hash slot on Redis Cluster. Commands stream out while the rest are
built (`commands.CommandStream`). A normal batch costs one round trip: tile merges,
then compare-and-set of the session keys this process wrote last (their state is
cached), and reads of the others, which are written in a second round trip.
Conflicts, which happen only after crashes, rebalances or a second writer, cost
more round trips but never double count.
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
from redis.exceptions import NoScriptError

from featurestream.online.scripts import SESSION_CAS, TILE_MERGE
from materializers.stream.commands import CommandStream, ClusterCommands, command_stream
from materializers.stream.metrics import REDIS_RETRIES
from materializers.stream.session_batch import SessionBatch
from materializers.stream.session_cache import SessionCache, StoredSession
from materializers.stream.tile_batch import Segment, TileBatch

log = logging.getLogger(__name__)
PARTLY_APPLIED = 2
MAX_CAS_ROUNDS = 50
KEYS_PER_CALL = 200
T = TypeVar("T")
Commands = CommandStream | ClusterCommands
# (batch, entity, key, what Redis holds) of a session key ready for its compare-and-set
Ready = tuple[SessionBatch, Any, str, StoredSession]


class RedisSink:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._cluster = isinstance(client, RedisCluster)
        self._tile_merge = client.register_script(TILE_MERGE)
        self._session_cas = client.register_script(SESSION_CAS)
        self._sessions = SessionCache()

    def write(self, tiles: list[TileBatch], sessions: list[SessionBatch]) -> None:
        """Apply the batch, retrying with backoff while Redis is unreachable (safe: every write is fenced)."""
        delay = 0.1
        load_scripts = False
        while True:
            try:
                if load_scripts:
                    for script in (self._tile_merge, self._session_cas):
                        self.client.script_load(script.script)
                self._write_once(tiles, sessions)
                return
            except NoScriptError:  # a restarted or flushed Redis: load the scripts, then send it all again
                load_scripts = True
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
        to_read: list[tuple[SessionBatch, Any, str]] = []
        ready: list[Ready] = []
        for batch in sessions:
            for entity in batch.entities():
                key = batch.key(entity)
                stored = self._sessions.get(key, batch.partitions(entity))
                if stored is None:
                    to_read.append((batch, entity, key))
                else:
                    ready.append((batch, entity, key, stored))
        first = True
        for _ in range(MAX_CAS_ROUNDS):
            with command_stream(self.client) as commands:
                tile_groups = self._send_tiles(commands, tiles) if first else []
                for batch, entity, key in to_read:
                    commands.send("HMGET", key, *batch.read_fields(entity))
                cas = self._send_cas(commands, ready)
                replies = _raise_errors(commands.replies())
            if first:
                self._resend_partly_applied(tile_groups, replies[:len(tile_groups)])
                first = False
            reads = replies[len(tile_groups):len(tile_groups) + len(to_read)]
            failed = self._settle_cas(cas, replies[len(tile_groups) + len(to_read):])
            ready = [(batch, entity, key, batch.stored(entity, read))
                     for (batch, entity, key), read in zip(to_read, reads, strict=True)]
            to_read = failed
            if not ready and not to_read:
                return
        raise RuntimeError(f"session state of {len(to_read)} entities kept changing under us; another writer?")

    def _send_tiles(self, commands: Commands, tiles: list[TileBatch]) -> list[tuple[TileBatch, list[Any]]]:
        groups = []
        for batch in tiles:
            for group in self._groups(batch.calls(), lambda call: call[0]):
                self._send_tile_merge(commands, batch, [key for key, _, _ in group], [update for _, update, _ in group])
                groups.append((batch, group))
        return groups

    def _send_tile_merge(self, commands: Commands, batch: TileBatch, keys: list[str], updates: list[Any]) -> None:
        commands.send("EVALSHA", self._tile_merge.sha, len(keys), *keys, batch.expiry_ms, batch.prune_every_ms,
                      batch.keep, msgpack.encode(updates))

    def _resend_partly_applied(self, groups: list[tuple[TileBatch, list[Any]]], results: list[list[int]]) -> None:
        resend: list[tuple[TileBatch, str, int, Segment]] = []
        for (batch, group), per_key in zip(groups, results, strict=True):
            for (key, _, segments), statuses in zip(group, per_key, strict=True):
                for (partition, segment), status in zip(segments, statuses, strict=True):
                    if status == PARTLY_APPLIED:
                        resend.append((batch, key, partition, segment))
        if not resend:
            return
        with command_stream(self.client) as commands:
            for batch, key, partition, segment in resend:
                self._send_tile_merge(commands, batch, [key], [batch.single_event_update(partition, segment)])
            _raise_errors(commands.replies())

    def _send_cas(self, commands: Commands, ready: list[Ready]) -> list[list[Any]]:
        """Send the compare-and-set of every key with events to apply; returns the sent calls' updates."""
        updates = []
        for batch, entity, key, stored in ready:
            new = batch.update(entity, stored)
            if new is not None:
                updates.append((batch, entity, key, stored, *new, self._sessions.new_version()))
        sent = []
        for group in self._groups(updates, lambda update: update[2]):
            by_batch: dict[int, list[Any]] = {}
            for update in group:
                by_batch.setdefault(id(update[0]), []).append(update)
            for same in by_batch.values():
                args: list[Any] = [same[0][0].expiry_ms]
                for batch, _, _, stored, blob, offsets, version in same:
                    args += [stored.version, version, blob, len(offsets)]
                    for partition, offset in sorted(offsets.items()):
                        args += [batch.offset_field(partition), offset]
                commands.send("EVALSHA", self._session_cas.sha, len(same), *(update[2] for update in same), *args)
                sent.append(same)
        return sent

    def _settle_cas(self, sent: list[list[Any]], replies: list[list[int]]) -> list[tuple[SessionBatch, Any, str]]:
        """Cache what was written; returns the keys somebody else wrote first, to read and retry."""
        failed = []
        for same, oks in zip(sent, replies, strict=True):
            for (batch, entity, key, stored, blob, offsets, version), ok in zip(same, oks, strict=True):
                if ok:
                    self._sessions.put(key, StoredSession(version, blob, {**stored.applied, **offsets}))
                else:
                    self._sessions.drop(key)
                    failed.append((batch, entity, key))
        return failed


def _raise_errors(replies: list[Any]) -> list[Any]:
    """The replies, once none is an error (the first one found is raised; fenced writes make a retry safe)."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies
