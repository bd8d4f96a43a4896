"""Writes one micro-batch to Redis: fenced tile merges and session compare-and-set, pipelined.

A normal batch costs two round trips (tile merges with session reads, then
session writes); conflicts, which happen only after crashes or rebalances,
cost more but never double count.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from featurestream.online.scripts import SESSION_CAS, TILE_MERGE
from materializers.stream.metrics import REDIS_RETRIES
from materializers.stream.session_batch import SessionBatch
from materializers.stream.tile_batch import TileBatch

log = logging.getLogger(__name__)
PARTLY_APPLIED = 2
MAX_CAS_ROUNDS = 50


class RedisSink:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._tile_merge = client.register_script(TILE_MERGE)
        self._session_cas = client.register_script(SESSION_CAS)

    def write(self, tiles: list[TileBatch], sessions: list[SessionBatch], stop: Any = None) -> None:
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

    def _write_once(self, tiles: list[TileBatch], sessions: list[SessionBatch]) -> None:
        pipe = self.client.pipeline(transaction=False)
        tile_calls = []
        for batch in tiles:
            for key, args, segments in batch.calls():
                self._tile_merge(keys=[key], args=args, client=pipe)
                tile_calls.append((batch, key, segments))
        session_entities = [(batch, entity) for batch in sessions for entity in batch.entities()]
        for batch, entity in session_entities:
            pipe.hmget(batch.key(entity), batch.read_fields(entity))
        results = pipe.execute()
        self._resend_partly_applied(tile_calls, results[: len(tile_calls)])
        self._write_sessions(session_entities, results[len(tile_calls):])

    def _resend_partly_applied(self, calls: list[tuple[TileBatch, str, list[Any]]], statuses: list[list[int]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        queued = 0
        for (batch, key, segments), status in zip(calls, statuses, strict=True):
            for (partition, segment), code in zip(segments, status, strict=True):
                if code == PARTLY_APPLIED:
                    self._tile_merge(keys=[key], args=batch.single_event_calls(key, partition, segment), client=pipe)
                    queued += 1
        if queued:
            pipe.execute()

    def _write_sessions(self, entities: list[tuple[SessionBatch, Any]], reads: list[list[Any]]) -> None:
        pending = list(zip(entities, reads, strict=True))
        for _ in range(MAX_CAS_ROUNDS):
            if not pending:
                return
            pipe = self.client.pipeline(transaction=False)
            sent = []
            for (batch, entity), read in pending:
                update = batch.update(entity, read)
                if update is not None:
                    self._session_cas(keys=[batch.key(entity)], args=update, client=pipe)
                    sent.append((batch, entity))
            written = pipe.execute() if sent else []
            retry = [(b, e) for (b, e), ok in zip(sent, written, strict=True) if not ok]
            if not retry:
                return
            pipe = self.client.pipeline(transaction=False)
            for batch, entity in retry:
                pipe.hmget(batch.key(entity), batch.read_fields(entity))
            pending = list(zip(retry, pipe.execute(), strict=True))
        raise RuntimeError(f"session state of {len(pending)} entities kept changing under us; another writer?")
