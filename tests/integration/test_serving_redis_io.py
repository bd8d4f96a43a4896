"""The serving pipeline hands each group of replies to its taker, in order, whatever the reads' boundaries."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import pytest
import redis

from featurestream.config import Settings
from serving.redis_io import RedisReader, encode


@pytest.mark.parametrize("count", [20, 1000])  # commands in one write, or more than Redis reads at once
def test_groups_get_their_own_replies_in_order(settings: Settings, redis_client: redis.Redis, count: int) -> None:
    prefix = f"rio:{uuid.uuid4().hex}:"
    rng = random.Random(7)
    values = {f"{prefix}{i}": rng.randbytes(rng.choice([0, 10, 5000, 70_000])) for i in range(count)}
    redis_client.mset(values)
    keys = list(values) + [f"{prefix}missing"]
    sizes = [0, 1, 4, 0, 12, 3, len(keys) - 20]  # some groups empty; big values straddle socket reads
    got: list[tuple[int, list[Any]]] = []
    groups, offset = [], 0
    for g, size in enumerate(sizes):
        payload = b"".join(encode(b"GET", key) for key in keys[offset:offset + size])
        groups.append((payload, size, lambda replies, g=g: got.append((g, replies))))
        offset += size

    async def read() -> None:
        reader = RedisReader(settings.redis_url, 10.0)
        try:
            await reader.stream(groups)
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
