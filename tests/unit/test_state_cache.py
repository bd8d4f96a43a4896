"""The sink's cache of written states (bounded by entries and by encoded bytes, oldest writes out first) and
the per-key work of a write (`StateWrites`): which keys are read first, the compare-and-set calls, what the
replies settle."""

from __future__ import annotations

from typing import Any

import pytest
from featurestream_native import StateCache, StateWrites

from featurestream.online.keys import OldLayoutError
from featurestream.online.reader import window_features
from materializers.stream.tile_batch import TileBatch
from tests.unit.test_tile_batch import NEWEST, _demo_view


def _put(cache: StateCache, key: str, size: int, applied: dict[int, int] | None = None) -> None:
    cache.put(key, "v", [], applied if applied is not None else {0: 5}, size)


def test_the_oldest_written_entries_go_first_past_the_entry_limit() -> None:
    cache = StateCache(capacity=2, capacity_bytes=1 << 20)
    _put(cache, "a", 1)
    _put(cache, "b", 1)
    _put(cache, "a", 1)  # written again: now the newest
    _put(cache, "c", 1)
    assert cache.get("b", [0]) is None
    assert cache.get("a", [0]) is not None and cache.get("c", [0]) is not None
    assert len(cache) == 2


def test_encoded_bytes_bound_the_cache_and_replaced_or_dropped_entries_free_theirs() -> None:
    cache = StateCache(capacity=100, capacity_bytes=100)
    _put(cache, "a", 60)
    _put(cache, "a", 60)  # replaces, does not add
    _put(cache, "b", 40)
    assert cache.get("a", [0]) is not None
    _put(cache, "c", 30)  # 130 bytes: the oldest goes
    assert cache.get("a", [0]) is None
    assert cache.get("b", [0]) is not None and cache.get("c", [0]) is not None
    cache.drop("b")
    _put(cache, "d", 70)  # 30 + 70 fits
    assert cache.get("c", [0]) is not None and cache.get("d", [0]) is not None
    cache.clear()
    _put(cache, "e", 100)
    assert cache.get("e", [0]) is not None


def test_many_rewrites_of_few_keys_keep_the_order_right() -> None:
    """Each put leaves a stale place in the eviction order; they are swept, and never evict a rewritten key."""
    cache = StateCache(capacity=3, capacity_bytes=1 << 20)
    for i in range(5000):
        _put(cache, "abc"[i % 3], 1)
    _put(cache, "d", 1)  # the last puts were c, a, b: "c" goes
    assert [cache.get(k, [0]) is not None for k in "abcd"] == [True, True, False, True]


def test_an_entry_serves_only_partitions_whose_fence_it_knows() -> None:
    cache = StateCache()
    _put(cache, "a", 1, {0: 5, 2: 7})
    assert cache.get("a", [0, 2]) == ("v", [], {0: 5, 2: 7})
    assert cache.get("a", [1]) is None


def test_versions_are_unique_to_the_cache_and_the_write() -> None:
    first, second = StateCache(), StateCache()
    versions = {first.new_version(), first.new_version(), second.new_version()}
    assert len(versions) == 3


class Commands:
    """Records what a round sends, as `CommandStream.send` takes it."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    def send(self, *words: Any) -> None:
        self.sent.append(words)


def _batch(*events: tuple[int, int, int]) -> TileBatch:
    """A demo windowed view's batch of (user, partition, offset) events."""
    batch = TileBatch("p", _demo_view())
    for user, partition, offset in events:
        batch.events.add((user,), partition, offset, NEWEST, dict.fromkeys(batch.events.columns, 1.0))
    return batch


def _round(writes: StateWrites, keys_per_call: int = 200) -> list[tuple[Any, ...]]:
    commands = Commands()
    writes.send(commands, "sha", keys_per_call)
    return commands.sent


def test_unknown_keys_are_read_then_written_with_their_fences_and_cached() -> None:
    cache = StateCache()
    batch = _batch((7, 1, 10), (7, 0, 4), (8, 0, 5))
    writes = StateWrites(cache, [batch])
    assert len(writes) == 2
    key7, key8 = batch.key((7,)), batch.key((8,))
    assert _round(writes) == [("HMGET", key7, "v", "s", batch.offset_field(0), batch.offset_field(1)),
                              ("HMGET", key8, "v", "s", batch.offset_field(0))]
    # 7 is new; 8 holds an older write whose fence is past its event: nothing of it to apply.
    assert not writes.settle([[None, None, None, None], [b"old", None, b"5"]])
    [call] = _round(writes)
    assert call[:6] == ("EVALSHA", "sha", 1, key7, batch.expiry_ms, writes.version)
    blob = call[7]
    assert call[6:] == ("", blob, 2, batch.offset_field(0), 4, batch.offset_field(1), 10)  # fences by partition
    assert writes.settle([[1]])
    assert len(writes) == 0
    version, _, applied = cache.get(key7, [0, 1])
    assert (version, applied) == (writes.version, {0: 4, 1: 10})
    assert window_features(batch.view, blob, NEWEST)["events_1h"] == 2
    assert cache.get(key8, [0]) is None  # nothing written: nothing cached

    # The next write of 7 needs no read, and keeps the fence of the partition it has no events of.
    again = StateWrites(cache, [_batch((7, 0, 6))])
    assert again.version != writes.version
    [call] = _round(again)
    assert call[:7] == ("EVALSHA", "sha", 1, key7, batch.expiry_ms, again.version, writes.version)
    assert call[8:] == (1, batch.offset_field(0), 6)
    assert window_features(batch.view, call[7], NEWEST)["events_1h"] == 3  # the cached state, updated
    assert again.settle([[1]])
    assert cache.get(key7, [0, 1])[2] == {0: 6, 1: 10}


def test_a_cached_key_missing_a_partitions_fence_is_read() -> None:
    cache = StateCache()
    key = _batch().key((7,))
    cache.put(key, "mine", _batch().decode(None), {0: 3}, 10)
    writes = StateWrites(cache, [_batch((7, 0, 4), (7, 2, 1))])
    assert _round(writes)[0][:2] == ("HMGET", key)


def test_a_key_somebody_else_wrote_is_dropped_and_read_again_and_the_others_cached() -> None:
    cache = StateCache()
    key7, key8 = _batch().key((7,)), _batch().key((8,))
    cache.put(key7, "mine", _batch().decode(None), {0: 3}, 10)
    cache.put(key8, "mine", _batch().decode(None), {0: 3}, 10)
    batch = _batch((7, 0, 4), (8, 0, 5))
    writes = StateWrites(cache, [batch])
    [call] = _round(writes)
    assert call[2:5] == (2, key7, key8) and call[7] == "mine"
    assert not writes.settle([[0, 1]])  # 7 refused (somebody else wrote it), 8 taken
    assert cache.get(key7, [0]) is None and cache.get(key8, [0])[0] == writes.version
    assert _round(writes) == [("HMGET", key7, "v", "s", batch.offset_field(0))]


def test_a_cached_key_with_nothing_new_is_neither_written_nor_dropped() -> None:
    cache = StateCache()
    key = _batch().key((7,))
    cache.put(key, "mine", _batch().decode(None), {0: 9}, 10)
    writes = StateWrites(cache, [_batch((7, 0, 9))])  # applied before a crash, say
    assert _round(writes) == []
    assert writes.settle([])
    version, _, applied = cache.get(key, [0])
    assert (version, applied) == ("mine", {0: 9})


def test_calls_hold_at_most_keys_per_call_and_replies_must_match_them() -> None:
    cache = StateCache()
    batch = _batch(*((user, 0, user) for user in range(5)))
    writes = StateWrites(cache, [batch])
    _round(writes, 2)
    assert not writes.settle([[None, None, None]] * 5)
    assert [call[2] for call in _round(writes, 2)] == [2, 2, 1]
    with pytest.raises(RuntimeError, match="the last round was sent but not settled"):
        _round(writes, 2)
    with pytest.raises(RuntimeError, match="2 replies for 0 reads and 3 compare-and-set calls"):
        writes.settle([[1, 1], [1, 1]])
    with pytest.raises(RuntimeError, match=f"compare-and-set of 1 keys from {batch.key((4,))} returned 2 results"):
        writes.settle([[1, 1], [1, 1], [1, 1]])
    with pytest.raises(RuntimeError, match="returned b'OK', not a list of 1 and 0"):
        writes.settle([[1, 1], [1, 1], b"OK"])
    assert len(cache) == 0  # a bad reply changes nothing


def test_a_read_that_is_not_bytes_names_the_key() -> None:
    batch = _batch((7, 0, 9))
    writes = StateWrites(StateCache(), [batch])
    _round(writes)
    with pytest.raises(RuntimeError, match=f"a read of {batch.key((7,))} returned .*not a list of bytes or nil"):
        writes.settle([["v", None, None]])  # decode_responses=True, say


def test_a_state_that_does_not_decode_names_its_key() -> None:
    batch = _batch((7, 0, 9))
    writes = StateWrites(StateCache(), [batch])
    _round(writes)
    with pytest.raises(ValueError, match="stored tiles are not") as raised:
        writes.settle([[b"v", b"\xc1", None]])
    assert raised.value.__notes__ == [f"while decoding the state stored in {batch.key((7,))}"]


def test_a_key_of_an_older_layout_is_refused_with_what_to_do() -> None:
    """Fences without a state version: reading it as empty would drop its history behind those fences."""
    batch = _batch((7, 0, 9))
    writes = StateWrites(StateCache(), [batch])
    _round(writes)
    with pytest.raises(OldLayoutError, match="featurestream rebuild"):
        writes.settle([[None, None, b"5"]])


class Colliding(str):
    """A key whose hash is another's: the cache finds entries by the key's hash."""

    def __hash__(self) -> int:
        return 42


def test_keys_of_one_hash_never_share_an_entry() -> None:
    cache = StateCache(capacity=10, capacity_bytes=100)
    _put(cache, Colliding("a"), 60)
    assert cache.get(Colliding("b"), [0]) is None
    _put(cache, Colliding("b"), 50)  # replaces "a": 50 bytes held, not 110
    assert cache.get(Colliding("a"), [0]) is None and cache.get(Colliding("b"), [0]) is not None
    cache.drop(Colliding("a"))  # not the key held
    assert cache.get(Colliding("b"), [0]) is not None
    _put(cache, "c", 50)
    assert cache.get(Colliding("b"), [0]) is not None and len(cache) == 2
