"""When the stream materializer collects garbage: a flush freezes, and collects everything every N flushes or
once the process's peak memory doubled since the last full pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from materializers.stream import collection
from materializers.stream.collection import Collector


class FakeGc:
    """Counts freezes and full passes."""

    def __init__(self) -> None:
        self.full_passes = 0
        self.freezes = 0

    def unfreeze(self) -> None:
        pass

    def collect(self) -> int:
        self.full_passes += 1
        return 0

    def freeze(self) -> None:
        self.freezes += 1


class Memory:
    peak_kib = 0


@pytest.fixture
def fake_gc(monkeypatch: pytest.MonkeyPatch) -> FakeGc:
    fake = FakeGc()
    monkeypatch.setattr(collection, "gc", fake)
    return fake


@pytest.fixture
def memory(monkeypatch: pytest.MonkeyPatch) -> type[Memory]:
    monkeypatch.setattr(collection, "peak_memory_kib", lambda: Memory.peak_kib)
    return Memory


def test_a_full_pass_once_the_peak_memory_doubled(fake_gc: FakeGc, memory: type[Memory]) -> None:
    collector = Collector(every=100)
    memory.peak_kib = 1_000
    collector.collect_all()
    assert fake_gc.full_passes == 1
    memory.peak_kib = 2_000  # exactly double: not yet
    collector.flushed()
    assert fake_gc.full_passes == 1 and fake_gc.freezes == 2
    memory.peak_kib = 2_001
    collector.flushed()
    assert fake_gc.full_passes == 2
    memory.peak_kib = 4_000  # under double the 2,001 the last pass ended at
    collector.flushed()
    assert fake_gc.full_passes == 2


def test_a_full_pass_every_n_flushes_whatever_the_growth(fake_gc: FakeGc, memory: type[Memory]) -> None:
    collector = Collector(every=3)
    memory.peak_kib = 1_000
    collector.collect_all()
    for _ in range(6):
        collector.flushed()
    assert fake_gc.full_passes == 1 + 2
    assert fake_gc.freezes == 1 + 6  # the pass freezes its survivors too


def test_the_peak_memory_is_the_process_s_own_in_kib() -> None:
    """At least what the process holds now (Linux's VmRSS, in kB), and in KiB: in bytes it would be past 64 GiB."""
    status = Path("/proc/self/status").read_text()
    resident_kib = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
    assert 0.9 * resident_kib <= collection.peak_memory_kib() < 64 * 1024 * 1024  # the kernel updates it lazily
