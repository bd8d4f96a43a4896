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

from featurestream_native import StateCache, StateWrites

from featurestream.online.scripts import STATE_CAS
from materializers.stream.commands import command_stream
from materializers.stream.metrics import REDIS_RETRIES
from materializers.stream.state_batch import StateBatch

log = logging.getLogger(__name__)
MAX_CAS_ROUNDS = 50
KEYS_PER_CALL = 200


class RedisSink:
    """One writer's path to Redis. Not for concurrent use: a write updates cached states in place before
    their compare-and-set, so two writes at once through one sink could count an event twice (separate
    sinks, as separate processes have, are safe)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._cas = client.register_script(STATE_CAS)
        self._cache = StateCache()  # see native/src/state_cache.rs
        # On a cluster a call's keys share a hash slot.
        self._slot_of = (lambda key: key_slot(key.encode())) if isinstance(client, RedisCluster) else None

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
        writes = StateWrites(self._cache, batches)  # per key, in Rust: split, build the calls, settle
        for _ in range(MAX_CAS_ROUNDS):
            with command_stream(self.client) as commands:
                writes.send(commands, self._cas.sha, KEYS_PER_CALL, self._slot_of)
                replies = _raise_errors(commands.replies())
            if writes.settle(replies):
                return
        raise RuntimeError(f"the state of {len(writes)} entities kept changing under us; another writer?")


def _raise_errors(replies: list[Any]) -> list[Any]:
    """The replies, once none is an error (the first one found is raised; fenced writes make a retry safe)."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies
