"""The one Redis round trip of a request: every command in one pipeline, bounded in time.

Commands arrive already encoded as RESP (the plan precomputes the constant parts, such
as a batch view's HMGET fields), are written in one buffer, and their replies are parsed
by hiredis: no per-command Python objects on either side. Connections are pooled; one
that fails or times out is dropped, and the next request opens a fresh one, so the
server recovers by itself when Redis returns.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any

import hiredis
from redis.connection import parse_url

from serving import metrics
from serving.errors import Unavailable

PING = b"*1\r\n$4\r\nPING\r\n"


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

    async def pipeline(self, payload: bytes, count: int) -> list[Any]:
        self.writer.write(payload)
        replies: list[Any] = []
        parser = self.parser
        while True:
            reply = parser.gets()
            while reply is not False:
                if isinstance(reply, hiredis.ReplyError):
                    raise ConnectionError(f"Redis replied {reply}")
                replies.append(reply)
                if len(replies) == count:
                    return replies
                reply = parser.gets()
            data = await self.reader.read(1 << 18)
            if not data:
                raise ConnectionError("Redis closed the connection")
            parser.feed(data)

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
        await connection.pipeline(self.hello, self.hello_replies)
        return connection

    async def _run(self, payload: bytes, count: int) -> list[Any]:
        loop = asyncio.get_running_loop()
        while self.idle and self.idle[-1].loop is not loop:  # left over from an event loop that has ended
            self.idle.pop(0)
        connection = self.idle.pop() if self.idle else await self._connect()
        try:
            replies = await connection.pipeline(payload, count)
        except BaseException:
            connection.close()
            raise
        self.idle.append(connection)
        return replies

    async def run(self, payload: bytes, count: int) -> list[Any]:
        """Send `count` encoded commands at once; their replies in order."""
        if not count:
            return []
        started = time.perf_counter()
        try:
            replies = await asyncio.wait_for(self._run(payload, count), self.timeout_s)
        except (OSError, TimeoutError, ConnectionError) as exc:
            metrics.REDIS_ERRORS.inc()
            raise Unavailable(f"Redis is unavailable ({type(exc).__name__}: {exc}); retry shortly") from None
        metrics.REDIS_SECONDS.observe(time.perf_counter() - started)
        return replies

    async def ping(self) -> bool:
        try:
            return (await self.run(PING, 1))[0] == b"PONG"
        except Unavailable:
            return False

    async def close(self) -> None:
        while self.idle:
            self.idle.pop().close()
