"""What batch materialization has done, per view, in Redis beside the features it wrote.

`--incremental` continues from the recorded end of each view, so runs chain
without gaps; keeping it in Redis means every machine writing this online
store sees the same record.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import orjson
import redis


@dataclass(frozen=True)
class Done:
    start_ms: int
    end_ms: int
    rows: int
    written: int
    at_ms: int


def progress_key(project: str) -> str:
    return f"fs:{project}:_batch_materialized"


def last_done(client: redis.Redis, project: str, view: str) -> Done | None:
    raw = client.hget(progress_key(project), view)
    return Done(**orjson.loads(raw)) if raw else None


def record_done(client: redis.Redis, project: str, view: str, done: Done) -> None:
    client.hset(progress_key(project), view, orjson.dumps(asdict(done)))
