"""The one Redis round trip of a request: every command in one pipeline, bounded in time.

Redis errors and timeouts become `Unavailable` (503); redis-py opens a fresh
connection on the next request, so the server recovers by itself when Redis returns.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from serving import metrics
from serving.errors import Unavailable


class RedisReader:
    def __init__(self, url: str, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.client = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, max_connections=256,
            retry_on_timeout=False,
        )

    async def run(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send all commands in one pipeline; their replies in order."""
        if not commands:
            return []
        started = time.perf_counter()
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for command in commands:
                    pipe.execute_command(*command)
                replies = await asyncio.wait_for(pipe.execute(), self.timeout_s)
        except (RedisError, OSError, TimeoutError) as exc:
            metrics.REDIS_ERRORS.inc()
            raise Unavailable(f"Redis is unavailable ({type(exc).__name__}: {exc}); retry shortly") from None
        metrics.REDIS_SECONDS.observe(time.perf_counter() - started)
        return replies

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.client.ping(), self.timeout_s))
        except (RedisError, OSError, TimeoutError):
            return False

    async def close(self) -> None:
        await self.client.aclose()
