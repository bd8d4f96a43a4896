"""What this process last read or wrote for each state key, so a compare-and-set needs no read first.

Every successful compare-and-set stores a version token unique to this process
and write, so a cached entry whose version Redis still holds is exactly the
stored state: nobody wrote the key since (not another process, not a rebuild,
not a recreation after expiry). When somebody did, the compare-and-set fails,
the entry is dropped and the key is read again, so the cache never changes a result.

Entries hold the decoded state, which a write updates in place: decoding a key's
whole state for every write would cost more than the write. So an entry is only
ever put back after Redis took the write, and the owner clears the cache when a
write fails midway (the updated states may or may not be in Redis).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, NamedTuple

CACHE_ENTRIES = 1 << 17
# Encoded bytes of the cached states, at most: decoded, they take several times that in memory.
CACHE_BYTES = 64 << 20


class StoredState(NamedTuple):
    version: str  # '' when the key does not exist
    state: Any  # the decoded state (a view batch's own type)
    applied: dict[int, int]  # source partition -> last applied offset (-1: none)
    size: int = 0  # the state's encoded length


class StateCache:
    """Bounded map of state key -> StoredState; the least recently written entries go first."""

    def __init__(self, capacity: int = CACHE_ENTRIES, capacity_bytes: int = CACHE_BYTES) -> None:
        self.capacity = capacity
        self.capacity_bytes = capacity_bytes
        self._entries: dict[str, StoredState] = {}
        self._bytes = 0
        self._prefix = os.urandom(8).hex()
        self._writes = 0

    def get(self, key: str, partitions: Iterable[int]) -> StoredState | None:
        """The cached state of `key`, if it knows the fence of every one of `partitions`."""
        entry = self._entries.get(key)
        if entry is None or any(p not in entry.applied for p in partitions):
            return None
        return entry

    def put(self, key: str, stored: StoredState) -> None:
        entries = self._entries
        self.drop(key)
        entries[key] = stored
        self._bytes += stored.size
        while len(entries) > self.capacity or self._bytes > self.capacity_bytes:
            self.drop(next(iter(entries)))

    def drop(self, key: str) -> None:
        gone = self._entries.pop(key, None)
        if gone is not None:
            self._bytes -= gone.size

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def new_version(self) -> str:
        """A version token no other process or write will ever use."""
        self._writes += 1
        return f"{self._prefix}.{self._writes:x}"
