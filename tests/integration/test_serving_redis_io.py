"""The serving pipeline hands each group of replies to its taker, in order, whatever the reads' boundaries, over one
connection shared by concurrent requests; an error fails only its own request, a hung Redis every waiting one."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from featurestream.config import Settings
from serving.errors import Unavailable
from serving.redis_io import RedisReader, _Connection, encode
from tests.ports import free_port
from tests.private_redis import start_redis

T = TypeVar("T")


def with_reader(url: str, work: Callable[[RedisReader], Awaitable[T]], timeout_s: float = 10.0) -> T:
    """`work` on a fresh reader, closed after."""
    async def main() -> T:
        reader = RedisReader(url, timeout_s)
        try:
            return await work(reader)
        finally:
            await reader.close()
    return asyncio.run(main())


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

    async def read(reader: RedisReader) -> None:
        await reader.stream(groups)
        assert await reader.ping()  # the connection is left clean for the next request

    try:
        with_reader(settings.redis_url, read)
    finally:
        redis_client.delete(*values)
    assert [g for g, _ in got] == list(range(len(sizes)))
    expected = [values.get(key) for key in keys]
    offset = 0
    for (_, replies), size in zip(got, sizes):
        assert replies == expected[offset:offset + size]
        offset += size


def test_concurrent_requests_share_one_connection_and_each_gets_its_own_replies(
        settings: Settings, redis_client: redis.Redis) -> None:
    """Small requests, and large ones whose rest waits for their first replies, submitted together and apart."""
    prefix = f"rio:{uuid.uuid4().hex}:"
    rng = random.Random(11)
    values = {f"{prefix}{i}": rng.randbytes(rng.choice([1, 100, 3000])) for i in range(400)}
    redis_client.mset(values)
    keys = list(values)
    sizes = [1, 3, 40, 150]  # 4 groups of 150 GETs are over the 16 KB Redis reads at once
    requests = [[rng.sample(keys, rng.choice(sizes)) for _ in range(rng.choice([1, 2, 4]))] for _ in range(60)]
    got: dict[int, list[list[Any]]] = {}
    client_ids: set[int] = set()

    async def one(reader: RedisReader, index: int, groups_keys: list[list[str]]) -> None:
        await asyncio.sleep(rng.choice([0, 0, 0.001]))  # some together in one loop iteration, some apart
        got[index] = []
        groups = [(b"".join(encode(b"GET", key) for key in group), len(group), got[index].append)
                  for group in groups_keys]
        await reader.stream([*groups, (encode(b"CLIENT", b"ID"), 1, lambda ids: client_ids.update(ids))])

    async def read(reader: RedisReader) -> None:
        await asyncio.gather(*(one(reader, i, r) for i, r in enumerate(requests)))

    try:
        with_reader(settings.redis_url, read)
    finally:
        redis_client.delete(*values)
    assert len(client_ids) == 1
    for index, groups_keys in enumerate(requests):
        assert got[index] == [[values[key] for key in group] for group in groups_keys], index


def test_an_error_fails_only_its_own_request(settings: Settings, redis_client: redis.Redis) -> None:
    key = f"rio:{uuid.uuid4().hex}"
    redis_client.set(key, b"v")

    def broken(_: list[Any]) -> None:
        raise ValueError("taker failed")

    async def read(reader: RedisReader) -> list[Any]:
        fine: list[Any] = []
        outcomes = await asyncio.gather(
            reader.stream([(encode(b"GET", key), 1, fine.extend)]),
            reader.stream([(encode(b"HGET", key, b"f"), 1, fine.extend)]),  # WRONGTYPE: an error reply
            reader.stream([(encode(b"GET", key), 1, broken)]),
            reader.stream([(encode(b"GET", key), 1, fine.extend)]),
            return_exceptions=True)
        assert await reader.run(encode(b"GET", key), 1) == [b"v"]  # the connection is still in step
        return [*outcomes, fine]

    try:
        first, wrong_type, taker, last, fine = with_reader(settings.redis_url, read)
    finally:
        redis_client.delete(key)
    assert first is None and last is None and fine == [b"v", b"v"]
    assert isinstance(wrong_type, Unavailable) and "WRONGTYPE" in str(wrong_type)
    assert isinstance(taker, ValueError)


def test_a_hung_redis_fails_every_waiting_request_in_time_and_the_next_one_reconnects(tmp_path: Path) -> None:
    port = free_port()
    server = start_redis(port, tmp_path)

    client_id = encode(b"CLIENT", b"ID")

    async def scenario(reader: RedisReader) -> tuple[list[Any], float, bool]:
        before = await reader.run(client_id, 1)
        server.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        hung = await asyncio.gather(*(reader.run(encode(b"PING"), 1) for _ in range(5)), return_exceptions=True)
        took = time.monotonic() - started
        server.send_signal(signal.SIGCONT)
        assert await reader.run(encode(b"PING"), 1) == [b"PONG"]
        return hung, took, before != await reader.run(client_id, 1)

    try:
        hung, took, reconnected = with_reader(f"redis://127.0.0.1:{port}/0", scenario, timeout_s=0.5)
    finally:
        server.send_signal(signal.SIGCONT)
        server.kill()
        server.wait()
    assert all(isinstance(outcome, Unavailable) for outcome in hung)
    assert took < 2.0
    assert reconnected  # a fresh connection: one that timed out may never answer again


def test_a_redis_that_accepts_but_never_answers_times_out_each_connection_attempt() -> None:
    """Every request waits for the one connection being opened: its opening is bounded too, so the next tries anew."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes the handshakes; nobody reads or answers

        async def ping_twice(reader: RedisReader) -> list[bool]:
            first = await reader.ping()
            await asyncio.sleep(0.5)  # longer than the limit: the first attempt has given up by now
            return [first, await reader.ping()]

        started = time.monotonic()
        answers = with_reader(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", ping_twice, timeout_s=0.3)
        took = time.monotonic() - started
        attempts = 0
        silent.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                silent.accept()[0].close()
                attempts += 1
    assert answers == [False, False] and took < 2.5
    assert attempts == 2  # the second request did not wait on the first one's attempt


def test_a_lost_connection_refuses_new_commands_at_once() -> None:
    async def submit() -> BaseException | None:
        connection = _Connection(asyncio.get_running_loop())  # never connected, as one already lost
        return connection.submit([(encode(b"PING"), 1, lambda _: None)]).exception()

    assert isinstance(asyncio.run(submit()), ConnectionError)


class _SlowToOpen(RedisReader):
    """Opens its first connection only after `delay_s`, as a Redis slow to accept would."""

    def __init__(self, url: str, timeout_s: float, delay_s: float) -> None:
        super().__init__(url, timeout_s)
        self.delay_s = delay_s

    async def _open(self) -> _Connection:
        delay, self.delay_s = self.delay_s, 0.0
        await asyncio.sleep(delay)
        return await super()._open()


def test_a_request_that_spent_its_time_on_the_connect_leaves_the_connection_to_the_others(tmp_path: Path) -> None:
    """Its call times out before a healthy Redis could answer: that says nothing of Redis, so the connection (and
    the request sharing it) must not be failed."""
    port = free_port()
    server = start_redis(port, tmp_path)
    client_id = encode(b"CLIENT", b"ID")

    async def scenario() -> list[Any]:
        reader = _SlowToOpen(f"redis://127.0.0.1:{port}/0", timeout_s=2.0, delay_s=1.8)
        try:
            # WAIT blocks this client 300 ms (no replica will ever acknowledge): the first call times out at 2.0 s,
            # about 0.2 s after it went out; the second, started at 0.6 s, is answered behind it at about 2.1 s.
            late = asyncio.ensure_future(reader.run(encode(b"WAIT", b"1", b"300"), 1))
            await asyncio.sleep(0.6)
            second = await reader.run(client_id, 1)
            return [await asyncio.gather(late, return_exceptions=True), second, await reader.run(client_id, 1)]
        finally:
            await reader.close()

    try:
        (late,), second, third = asyncio.run(scenario())
    finally:
        server.kill()
        server.wait()
    assert isinstance(late, Unavailable)
    assert second == third  # the same connection answered both


def test_a_call_timing_out_behind_answered_calls_leaves_the_connection(tmp_path: Path) -> None:
    """Redis finished the call ahead while this one waited: it is slow, not hung, so the connection stays."""
    port = free_port()
    server = start_redis(port, tmp_path)
    client_id = encode(b"CLIENT", b"ID")

    async def scenario(reader: RedisReader) -> list[Any]:
        before = await reader.run(client_id, 1)
        # Each WAIT blocks the connection 700 ms: the first is answered at 0.7 s, the second would be at 1.4 s
        # and times out at 1.0 s, after waiting all of its limit.
        waits = await asyncio.gather(*(reader.run(encode(b"WAIT", b"1", b"700"), 1) for _ in range(2)),
                                     return_exceptions=True)
        return [before, *waits, await reader.run(client_id, 1)]

    try:
        before, first, second, after = with_reader(f"redis://127.0.0.1:{port}/0", scenario, timeout_s=1.0)
    finally:
        server.kill()
        server.wait()
    assert first == [0] and isinstance(second, Unavailable)
    assert before == after  # the same connection
