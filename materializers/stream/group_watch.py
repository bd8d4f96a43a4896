"""Tells a consumer wedged outside its group from one that is legitimately idle.

librdkafka can lose its group coordinator (a broker restart) and keep timing out
its FindCoordinator requests instead of rejoining; such a consumer never reads
again. Its statistics say so: the group handler's `state` stays away from "up".
A member with no partitions because the group has more members than partitions
is "up" and "steady", and must be left alone.
"""

from __future__ import annotations

import orjson

UP = "up"


class GroupWatch:
    """Fed librdkafka's statistics JSON; says when the group handler has been away from "up" too long."""

    def __init__(self, patience_s: float) -> None:
        self.patience_s = patience_s
        self.state = ""
        self._away_since: float | None = None

    def observe(self, stats_json: str | bytes, now: float) -> None:
        group = orjson.loads(stats_json).get("cgrp")
        if group is None:  # not a group member (assign() only): nothing to watch
            return
        self.state = group.get("state", "")
        if self.state == UP:
            self._away_since = None
        elif self._away_since is None:
            self._away_since = now

    def wedged(self, now: float) -> bool:
        return self._away_since is not None and now - self._away_since >= self.patience_s

    def away_s(self, now: float) -> float:
        return 0.0 if self._away_since is None else now - self._away_since
