"""What Redis says was applied, per consumer group, topic and partition: where to resume and the watermark.

Written after a flush has put the batch's state in Redis and its events in the
event log; a restarted or newly assigned consumer resumes right after it, with
the same watermark, so every late/on-time decision replays identically.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from featurestream.online.keys import progress_key

NO_EVENT_TIME = -(2**62)


@dataclass
class PartitionProgress:
    offset: int = -1  # last offset handled (applied, dead-lettered or skipped)
    max_ts: int = NO_EVENT_TIME  # highest accepted event time: the watermark is this minus the lateness


class ProgressStore:
    def __init__(self, client: redis.Redis, project: str, group: str) -> None:
        self.client = client
        self.project = project
        self.group = group

    def load(self, topic: str, partitions: list[int]) -> dict[int, PartitionProgress]:
        if not partitions:
            return {}
        raw = self.client.hmget(progress_key(self.project, self.group, topic), [str(p) for p in partitions])
        found = {}
        for partition, value in zip(partitions, raw, strict=True):
            if value is not None:
                offset, max_ts = value.decode().split(":")
                found[partition] = PartitionProgress(int(offset), int(max_ts))
        return found

    def save(self, topic: str, progress: dict[int, PartitionProgress]) -> None:
        if progress:
            self.client.hset(progress_key(self.project, self.group, topic),
                             mapping={str(p): f"{s.offset}:{s.max_ts}" for p, s in progress.items()})
