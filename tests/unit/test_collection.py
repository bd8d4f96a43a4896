"""When the stream materializer collects garbage: a flush freezes, and collects everything every N flushes or
once the frozen objects doubled since the last full pass."""

from __future__ import annotations

import pytest

from materializers.stream import collection
from materializers.stream.collection import Collector


class FakeGc:
    """Counts freezes and full passes; a full pass leaves `survivors` objects frozen, `allocated` is what the
    next freeze adds to the frozen ones."""

    def __init__(self) -> None:
        self.frozen = 0
        self.survivors = 0
        self.allocated = 0
        self.full_passes = 0
        self.freezes = 0

    def unfreeze(self) -> None:
        pass

    def collect(self) -> int:
        self.full_passes += 1
        gone = self.frozen + self.allocated - self.survivors
        self.frozen, self.allocated = self.survivors, 0
        return gone

    def freeze(self) -> None:
        self.freezes += 1
        self.frozen += self.allocated
        self.allocated = 0

    def get_count(self) -> tuple[int, int, int]:
        return self.allocated, 0, 0

    def get_freeze_count(self) -> int:
        return self.frozen


@pytest.fixture
def fake_gc(monkeypatch: pytest.MonkeyPatch) -> FakeGc:
    fake = FakeGc()
    monkeypatch.setattr(collection, "gc", fake)
    return fake


def test_a_full_pass_once_the_frozen_objects_doubled(fake_gc: FakeGc) -> None:
    collector = Collector(every=100)
    fake_gc.frozen = fake_gc.survivors = 1_000
    collector.collect_all()
    assert fake_gc.full_passes == 1
    fake_gc.allocated = 600
    collector.flushed()
    fake_gc.allocated = 400  # 1,000 frozen since the pass, exactly double: not yet
    collector.flushed()
    assert fake_gc.full_passes == 1 and fake_gc.freezes == 3 and fake_gc.frozen == 2_000
    fake_gc.allocated, fake_gc.survivors = 1, 1_500
    collector.flushed()
    assert fake_gc.full_passes == 2 and fake_gc.frozen == 1_500
    fake_gc.allocated = 1_400  # under double the 1,500 the last pass left
    collector.flushed()
    assert fake_gc.full_passes == 2


def test_a_full_pass_every_n_flushes_whatever_the_growth(fake_gc: FakeGc) -> None:
    collector = Collector(every=3)
    fake_gc.frozen = fake_gc.survivors = 1_000
    collector.collect_all()
    for _ in range(6):
        collector.flushed()
    assert fake_gc.full_passes == 1 + 2
    assert fake_gc.freezes == 1 + 6  # the pass freezes its survivors too
