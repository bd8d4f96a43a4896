"""The one Redis round trip of a request: every command in one pipeline, bounded in time.

Commands arrive already encoded as RESP (the plan precomputes the constant parts, such
as a batch view's HMGET fields) and their replies are parsed by hiredis: no per-command
Python objects on either side. Replies come in groups (one per view read), and each group
is handed on as soon as it is complete: Redis answers the next group while Python works
on the last.

A worker keeps one connection, shared by its concurrent requests (auto-pipelining), and
replies are matched to requests by the order they were sent in. A request on an idle
connection is written at once; those submitted while others are in flight leave together
at the end of the event-loop iteration: one send, and one receive, for several requests,
on our side and on Redis's. Redis reads a client's commands 16 KB at a time and answers only after running
all of them, so a large request sends its first group alone and the rest (and whatever
was submitted after it) once that group's replies start to arrive.

A request that times out with no call answered for half the time limit or more closes
the connection, failing the requests behind it, which would wait on the same Redis: each
gets a 503 within the time limit, and the next request opens a fresh connection, so the
server recovers by itself when Redis returns.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any

import hiredis
from redis.connection import parse_url

from serving import metrics
from serving.errors import Unavailable

PING = b"*1\r\n$4\r\nPING\r\n"
Group = tuple[bytes, int, Callable[[list[Any]], None]]  # commands, their count, what takes their replies
_ONE_READ = 16 * 1024  # what Redis reads of a pipeline before it runs the commands read (PROTO_IOBUF_LEN)


def bulk(arg: bytes | str) -> bytes:
    raw = arg.encode() if isinstance(arg, str) else arg
    return b"$%d\r\n%s\r\n" % (len(raw), raw)


def encode(*args: bytes | str) -> bytes:
    """One command in RESP."""
    return b"*%d\r\n" % len(args) + b"".join(map(bulk, args))


def around_key(command: bytes, *after: bytes) -> tuple[bytes, bytes]:
    """`command <key> *after` in RESP, split around the key: a plan encodes its constant parts once."""
    return b"*%d\r\n" % (len(after) + 2) + bulk(command), b"".join(map(bulk, after))


class _Call:
    """One request's groups, awaiting their replies; `done` gets the takers' seconds, or the first error."""

    __slots__ = ("groups", "group", "replies", "took", "error", "done", "rest")

    def __init__(self, groups: Sequence[Group], done: asyncio.Future[float], rest: bytes) -> None:
        self.groups = groups
        self.group = 0
        self.replies: list[Any] = []
        self.took = 0.0
        self.error: Exception | None = None
        self.done = done
        self.rest = rest  # commands held until the first replies arrive (see the module's docstring)

    def settle_empty_groups(self) -> bool:
        """Hand empty groups their (no) replies; True once every group has had its replies."""
        groups = self.groups
        while self.group < len(groups) and not groups[self.group][1]:
            self._take(groups[self.group][2], [])
            self.group += 1
        return self.group == len(groups)

    def add(self, reply: Any) -> bool:
        """Take one reply; True once the call has all of its replies."""
        if isinstance(reply, hiredis.ReplyError) and self.error is None:
            self.error = ConnectionError(f"Redis replied {reply}")
        replies = self.replies
        replies.append(reply)
        _, count, take = self.groups[self.group]
        if len(replies) < count:
            return False
        self.replies = []
        self.group += 1
        self._take(take, replies)
        return self.settle_empty_groups()

    def _take(self, take: Callable[[list[Any]], None], replies: list[Any]) -> None:
        if self.error is not None or self.done.done():  # failed, or given up on: keep only the order
            return
        started = time.perf_counter()
        try:
            take(replies)
        except Exception as exc:  # the request's own error, raised where it awaits
            self.error = exc
        self.took += time.perf_counter() - started

    def finish(self) -> None:
        if not self.done.done():
            if self.error is None:
                self.done.set_result(self.took)
            else:
                self.done.set_exception(self.error)


class _Connection(asyncio.Protocol):
    """One Redis connection shared by a worker's requests; replies go to calls in the order they were sent."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop  # usable only on the loop that opened it
        self.parser = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.calls: collections.deque[_Call] = collections.deque()  # sent (or queued), awaiting replies
        self.outgoing: list[bytes] = []  # commands of this loop iteration, written together at its end
        self.gate: _Call | None = None  # a call whose rest is unsent: everything after it waits too
        self.lost: Exception | None = None
        self.finished = 0  # calls answered in full so far: a waiting call hears whether Redis still gets through

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = ConnectionError("Redis closed the connection") if exc is None else exc
        calls, self.calls = self.calls, collections.deque()
        for call in calls:
            if not call.done.done():
                call.done.set_exception(self.lost)

    @property
    def usable(self) -> bool:
        return self.lost is None and self.transport is not None and not self.transport.is_closing()

    def submit(self, groups: Sequence[Group]) -> asyncio.Future[float]:
        done: asyncio.Future[float] = self.loop.create_future()
        if not self.usable:  # lost between the request finding it and submitting
            done.set_exception(self.lost or ConnectionError("the Redis connection is closed"))
            return done
        if len(groups) == 1:
            head, rest = groups[0][0], b""
        else:
            first = next((i + 1 for i, (_, count, _) in enumerate(groups) if count), len(groups))
            head = b"".join(payload for payload, _, _ in groups[:first])
            rest = b"".join(payload for payload, _, _ in groups[first:])
            if len(head) + len(rest) <= _ONE_READ:
                head, rest = head + rest, b""
        if self.gate is not None:  # an earlier call's rest goes first; this call follows it whole
            self.gate.rest += head + rest
            head = rest = b""
        call = _Call(groups, done, rest)
        if rest:
            self.gate = call
        if head:
            if not self.calls and not self.outgoing:  # nothing in flight to share a write with
                self.transport.write(head)  # type: ignore[union-attr]
            else:
                if not self.outgoing:
                    self.loop.call_soon(self._flush)
                self.outgoing.append(head)
        if call.settle_empty_groups():
            call.finish()
        else:
            self.calls.append(call)
        return done

    def _flush(self) -> None:
        outgoing, self.outgoing = self.outgoing, []
        if self.usable:
            self.transport.write(b"".join(outgoing))  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        parser.feed(data)
        calls = self.calls
        while calls:
            reply = parser.gets()
            if reply is False:
                break
            call = calls[0]
            if call is self.gate:  # its first replies are in: Redis can take the rest
                self.gate = None
                self.transport.write(call.rest)  # type: ignore[union-attr]
                call.rest = b""
            if call.add(reply):
                calls.popleft()
                call.finish()
                self.finished += 1

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.connection_lost(None)


class RedisReader:
    def __init__(self, url: str, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        options = parse_url(url)
        self.host, self.port = options.get("host", "127.0.0.1"), int(options.get("port", 6379))
        self.ssl = ssl.create_default_context() if "connection_class" in options else None
        login = [b"AUTH", *([options["username"]] if options.get("username") else []), options["password"]] \
            if options.get("password") else None
        self.hello = (encode(*login) if login else b"") + encode(b"SELECT", str(options.get("db", 0)))
        self.hello_replies = 2 if login else 1
        self._connection: _Connection | None = None
        self._opening: asyncio.Task[_Connection] | None = None

    async def _open(self) -> _Connection:
        """A new connection, logged in; bounded in time itself, as every request after it waits for it."""
        loop = asyncio.get_running_loop()
        connection = None
        try:
            async with asyncio.timeout(self.timeout_s):
                _, connection = await loop.create_connection(lambda: _Connection(loop), self.host, self.port,
                                                             ssl=self.ssl)
                await connection.submit([(self.hello, self.hello_replies, _ignore)])
        except BaseException:
            if connection is not None:
                connection.close()
            raise
        self._connection = connection
        return connection

    async def _connected(self) -> _Connection:
        """The worker's connection, opened once however many requests ask for it meanwhile."""
        loop = asyncio.get_running_loop()
        connection = self._connection
        if connection is not None and connection.usable and connection.loop is loop:
            return connection
        opening = self._opening
        if opening is None or opening.done() or opening.get_loop() is not loop:
            opening = self._opening = loop.create_task(self._open())
            opening.add_done_callback(_seen)  # its failure may outlive every request that waited for it
        return await asyncio.shield(opening)  # a waiter timing out leaves the others their connection

    async def stream(self, groups: Sequence[Group]) -> None:
        """Send each group's encoded commands; its replies, in order, to its taker as soon as they are in.

        The time limit covers the takers too; the Redis metric leaves their time out. An error a taker
        raises is raised here, once the call's replies are all in.
        """
        if not groups:
            return
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        sent_at = loop.time()
        deadline = sent_at + self.timeout_s
        connection = self._connection
        heard = -1  # the connection's count of finished calls when this call went out (-1: it did not)
        try:
            if connection is None or connection.loop is not loop or not connection.usable:
                async with asyncio.timeout_at(deadline):
                    connection = await self._connected()
                sent_at = loop.time()
            done = connection.submit(groups)
            heard = connection.finished
            expiry = loop.call_at(deadline, _expire, done)  # cheaper than a timeout context, on every request
            try:
                took = await done
            finally:
                expiry.cancel()
        except (OSError, TimeoutError, ConnectionError) as exc:
            if isinstance(exc, TimeoutError) and heard >= 0 and connection is not None \
                    and heard == connection.finished and loop.time() - sent_at >= self.timeout_s / 2:
                # No call got its whole answer while this one waited half the limit or more: the calls behind it
                # would wait too, and closing drops what Redis has not read yet. (A call left little time by a
                # slow connect proves nothing: the connection stays.)
                connection.close()
            metrics.REDIS_ERRORS.inc()
            raise Unavailable(f"Redis is unavailable ({type(exc).__name__}: {exc}); retry shortly") from None
        metrics.REDIS_SECONDS.observe(time.perf_counter() - started - took)

    async def run(self, payload: bytes, count: int) -> list[Any]:
        """Send `count` encoded commands at once; their replies in order."""
        replies: list[Any] = []
        if count:
            await self.stream([(payload, count, replies.extend)])
        return replies

    async def ping(self) -> bool:
        try:
            return (await self.run(PING, 1))[0] == b"PONG"
        except Unavailable:
            return False

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _seen(task: asyncio.Task[_Connection]) -> None:
    if not task.cancelled():
        task.exception()  # each waiter got it, or gave up first: nothing to log


def _expire(done: asyncio.Future[float]) -> None:
    if not done.done():
        done.set_exception(TimeoutError("no reply within the time limit"))


def _ignore(_: list[Any]) -> None:
    """The replies to connection set-up commands: errors raise before they get here."""
