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


def test_a_key_of_an_older_layout_is_refused_with_what_to_do() -> None:
    """Fences without a state version: reading it as empty would drop its history behind those fences."""
    import pytest

    from featurestream.online.keys import OldLayoutError
    from materializers.stream.tile_batch import TileBatch
    from tests.unit.test_tile_batch import _demo_view

    batch = TileBatch("p", _demo_view())
    batch.events.add((7,), 0, 9, 1_790_000_000_000, dict.fromkeys(batch.events.columns))
    with pytest.raises(OldLayoutError, match="featurestream rebuild"):
        batch.stored((7,), [None, None, b"5"])
    assert batch.stored((7,), [None, None, None]).applied == {0: -1}  # a new key
