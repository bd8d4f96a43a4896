"""The clicks file: one Kafka message value per line, in the order a producer sends them, written in chunks."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from featurestream.generate.clickstream import EVENT_TYPES

CHUNK_LINES = 100_000
_TYPE_NAMES = np.array(EVENT_TYPES, dtype=object)


def iso_ms(ts_ms: np.ndarray) -> list[str]:
    """ISO-8601 UTC with milliseconds and a trailing Z, as the KafkaSource's timestamp_field expects."""
    return np.datetime_as_string(np.asarray(ts_ms, dtype="datetime64[ms]"), unit="ms", timezone="UTC").tolist()


def event_lines(event_id: np.ndarray, user_id: np.ndarray, item_id: np.ndarray, event_type: np.ndarray,
                price: np.ndarray, ts_ms: np.ndarray, id_prefix: str) -> list[bytes]:
    """Compact JSON built by formatting (ids and type names never need escaping); floats use Python's shortest repr."""
    return [
        f'{{"event_id":"{id_prefix}{e:09d}","user_id":{u},"item_id":{i},"event_type":"{t}",'
        f'"price":{p!r},"event_timestamp":"{s}"}}'.encode()
        for e, u, i, t, p, s in zip(event_id.tolist(), user_id.tolist(), item_id.tolist(),
                                    _TYPE_NAMES[event_type].tolist(), price.tolist(), iso_ms(ts_ms), strict=True)
    ]


def write_lines(path: Path, total: int, is_malformed: np.ndarray, good: Callable[[int, int], list[bytes]],
                malformed: list[bytes], progress: Callable[[int, int], None] | None) -> None:
    """Interleave good lines (made chunk by chunk by `good(start, stop)`) with malformed ones where the mask says.

    Written to a side file and renamed, so a reader never sees half a file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    good_done = bad_done = 0
    with open(partial, "wb") as out:
        for start in range(0, len(is_malformed), CHUNK_LINES):
            mask = is_malformed[start:start + CHUNK_LINES]
            n_bad = int(mask.sum())
            good_lines = iter(good(good_done, good_done + len(mask) - n_bad))
            bad_lines = iter(malformed[bad_done:bad_done + n_bad])
            out.write(b"\n".join([next(bad_lines) if bad else next(good_lines) for bad in mask.tolist()]))
            out.write(b"\n")
            good_done += len(mask) - n_bad
            bad_done += n_bad
            if progress is not None:
                progress(good_done, total)
    os.replace(partial, path)
