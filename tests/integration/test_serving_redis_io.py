"""The serving pipeline hands each group of replies to its taker, in order, whatever the reads' boundaries."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import redis

from featurestream.config import Settings
from serving.redis_io import RedisReader, encode


def test_groups_get_their_own_replies_in_order(settings: Settings, redis_client: redis.Redis) -> None:
    prefix = f"rio:{uuid.uuid4().hex}:"
    rng = random.Random(7)
    values = {f"{prefix}{i}": rng.randbytes(rng.choice([0, 10, 5000, 70_000])) for i in range(300)}
    redis_client.mset(values)
    keys = list(values) + [f"{prefix}missing"]
    sizes = [0, 1, 40, 0, 120, 3, len(keys) - 164]  # some groups empty; big values straddle socket reads
    got: list[tuple[int, list[Any]]] = []
    groups = [(size, lambda replies, g=g: got.append((g, replies))) for g, size in enumerate(sizes)]
    payload = b"".join(encode(b"GET", key) for key in keys)

    async def read() -> None:
        reader = RedisReader(settings.redis_url, 10.0)
        try:
            await reader.stream(payload, groups)
            assert await reader.ping()  # the connection is left clean for the next request
        finally:
            await reader.close()

    try:
        asyncio.run(read())
    finally:
        redis_client.delete(*values)
    assert [g for g, _ in got] == list(range(len(sizes)))
    expected = [values.get(key) for key in keys]
    offset = 0
    for (_, replies), size in zip(got, sizes):
        assert replies == expected[offset:offset + size]
        offset += size
