"""When the materializer's garbage collection runs: automatic passes off, survivors frozen at each flush.

Feast and pyarrow leave millions of long-lived objects, and a micro-batch holds
millions of young ones (rows, cells, updates) that reference counting frees.
Automatic passes over those cost more than the work (40% of the per-event time,
measured), so they are off while the loop runs. What survives a flush (mostly
cached entity states) is frozen, never visited again: collecting what was
allocated since the last flush found nothing (0 unreachable objects at every
flush of a 400k-event run) and held the GIL 0.5 s per 200k events.

Everything is collected every `every` flushes, and as soon as the frozen objects
doubled since the last full pass (the state cache is bounded, so only garbage,
say cycles a udf leaves, keeps growing), so garbage never holds much memory.
What a flush freezes is counted from the allocation counter, which the freeze
resets: `gc.get_freeze_count()` walks every frozen object, 75 ms under the GIL
per flush with the demo's state cached, so it runs only after a full pass.
"""

from __future__ import annotations

import gc

FULL_COLLECTION_EVERY = 100  # flushes


class Collector:
    def __init__(self, every: int = FULL_COLLECTION_EVERY) -> None:
        self.every = every
        self._flushes = 0
        self._frozen_after_collection = 0  # gc.get_freeze_count() after the last full pass
        self._frozen_since = 0  # objects frozen by flushes since then, about (frees of older ones go uncounted)

    def collect_all(self) -> None:
        """Collect every object, frozen ones too, then freeze the survivors and remember how many they are."""
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self._frozen_after_collection = gc.get_freeze_count()
        self._frozen_since = 0

    def flushed(self) -> None:
        """A flush took its work: freeze what survived, or collect everything when it is due."""
        self._flushes += 1
        self._frozen_since += gc.get_count()[0]  # tracked objects allocated since the last freeze, less frees
        if self._flushes % self.every == 0 or self._frozen_since > self._frozen_after_collection:
            self.collect_all()
        else:
            gc.freeze()
