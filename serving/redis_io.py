"""The one Redis round trip of a request: every command in one pipeline, bounded in time.

Commands arrive already encoded as RESP (the plan precomputes the constant parts, such
as a batch view's HMGET fields), are written in one buffer, and their replies are parsed
by hiredis: no per-command Python objects on either side. Replies come in groups (one per
view read), and each group is handed on as soon as it is complete: Redis answers the next
group while Python works on the last. Redis reads a client's commands 16 KB at a time and
answers only after running all of them, so a large pipeline sends its first group alone and
the rest once that group's replies arrive. Connections are pooled; one that fails or times out
is dropped, and the next request opens a fresh one, so the server recovers by itself when
Redis returns.
"""

from __future__ import annotations

import asyncio
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


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = hiredis.Reader()
        self.loop = asyncio.get_running_loop()  # a connection is usable only on the loop that opened it

    async def pipeline(self, groups: Sequence[Group]) -> float:
        """Send the commands; each group's replies go to its taker in order. Returns the takers' seconds."""
        # The head runs up to the first group that has replies: the rest waits for them to start arriving.
        first = next((i + 1 for i, (_, count, _) in enumerate(groups) if count), len(groups))
        head = b"".join(payload for payload, _, _ in groups[:first])
        rest = b"".join(payload for payload, _, _ in groups[first:])
        if len(head) + len(rest) <= _ONE_READ:
            head, rest = head + rest, b""
        self.writer.write(head)
        parser = self.parser
        took = 0.0
        for _, count, take in groups:
            replies: list[Any] = []
            while len(replies) < count:
                reply = parser.gets()
                if reply is False:
                    data = await self.reader.read(1 << 18)
                    if not data:
                        raise ConnectionError("Redis closed the connection")
                    parser.feed(data)
                    if rest:  # the first group is being answered: Redis can take the others
                        self.writer.write(rest)
                        rest = b""
                    continue
                if isinstance(reply, hiredis.ReplyError):
                    raise ConnectionError(f"Redis replied {reply}")
                replies.append(reply)
            started = time.perf_counter()
            take(replies)
            took += time.perf_counter() - started
        return took

    def close(self) -> None:
        self.writer.close()


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
        self.idle: list[_Connection] = []

    async def _connect(self) -> _Connection:
        reader, writer = await asyncio.open_connection(self.host, self.port, ssl=self.ssl, limit=1 << 20)
        connection = _Connection(reader, writer)
        await connection.pipeline([(self.hello, self.hello_replies, _ignore)])
        return connection

    async def _stream(self, groups: Sequence[Group]) -> float:
        loop = asyncio.get_running_loop()
        while self.idle and self.idle[-1].loop is not loop:  # left over from an event loop that has ended
            self.idle.pop(0)
        connection = self.idle.pop() if self.idle else await self._connect()
        try:
            took = await connection.pipeline(groups)
        except BaseException:  # replies may be left unread: the connection cannot be reused
            connection.close()
            raise
        self.idle.append(connection)
        return took

    async def stream(self, groups: Sequence[Group]) -> None:
        """Send each group's encoded commands; its replies, in order, to its taker as soon as they are in.

        The time limit covers the takers too; the Redis metric leaves their time out.
        """
        if not groups:
            return
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):  # no task per request, unlike wait_for
                took = await self._stream(groups)
        except (OSError, TimeoutError, ConnectionError) as exc:
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
        while self.idle:
            self.idle.pop().close()


def _ignore(_: list[Any]) -> None:
    """The replies to connection set-up commands: errors raise before they get here."""
