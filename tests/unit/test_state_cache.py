"""The sink's cache of written states: bounded by entries and by encoded bytes, oldest writes out first."""

from __future__ import annotations

from materializers.stream.state_cache import StateCache, StoredState


def _stored(size: int, applied: dict[int, int] | None = None) -> StoredState:
    return StoredState("v", [], applied if applied is not None else {0: 5}, size)


def test_the_oldest_written_entries_go_first_past_the_entry_limit() -> None:
    cache = StateCache(capacity=2, capacity_bytes=1 << 20)
    cache.put("a", _stored(1))
    cache.put("b", _stored(1))
    cache.put("a", _stored(1))  # written again: now the newest
    cache.put("c", _stored(1))
    assert cache.get("b", [0]) is None
    assert cache.get("a", [0]) is not None and cache.get("c", [0]) is not None


def test_encoded_bytes_bound_the_cache_and_replaced_or_dropped_entries_free_theirs() -> None:
    cache = StateCache(capacity=100, capacity_bytes=100)
    cache.put("a", _stored(60))
    cache.put("a", _stored(60))  # replaces, does not add
    cache.put("b", _stored(40))
    assert cache.get("a", [0]) is not None
    cache.put("c", _stored(30))  # 130 bytes: the oldest goes
    assert cache.get("a", [0]) is None
    assert cache.get("b", [0]) is not None and cache.get("c", [0]) is not None
    cache.drop("b")
    cache.put("d", _stored(70))  # 30 + 70 fits
    assert cache.get("c", [0]) is not None and cache.get("d", [0]) is not None
    cache.clear()
    cache.put("e", _stored(100))
    assert cache.get("e", [0]) is not None


def test_an_entry_serves_only_partitions_whose_fence_it_knows() -> None:
    cache = StateCache()
    cache.put("a", _stored(1, {0: 5, 2: 7}))
    assert cache.get("a", [0, 2]) is not None
    assert cache.get("a", [1]) is None
