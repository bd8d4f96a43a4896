"""Commands sent to Redis as they are built, replies read once all are sent.

A micro-batch's commands go out in chunks while the next ones are still being
built, so Redis runs the scripts of one chunk while Python prepares the next: the
two processes work side by side instead of taking turns. One connection keeps
them in order; their RESP is packed natively (`native/src/resp.rs`), a chunk at a time. Redis Cluster
routes by slot, so there they go as a redis-py pipeline.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

import redis
from featurestream_native import pack_commands
from redis.cluster import RedisCluster

from featurestream.online.leases import PooledConnection

SEND_EVERY = 64  # commands per socket write: small commands (HMGET) are not worth a syscall each


class CommandStream:
    """Send now, read later; `replies` returns one reply (or the ResponseError) per command, in order.

    A context manager: the connection goes back to the pool on the way out, closed first if replies
    may be left unread (an error before or while reading them).
    """

    def __init__(self, client: redis.Redis) -> None:
        self._lease = PooledConnection(client)
        self._connection = self._lease.connection
        self._unsent: list[tuple[Any, ...]] = []
        self._sent = 0
        self._read = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._lease.give_back(in_step=self._read)

    def send(self, *args: Any) -> None:
        self._unsent.append(args)
        if len(self._unsent) >= SEND_EVERY or len(args) > SEND_EVERY:
            self._flush()

    def _flush(self) -> None:
        if self._unsent:
            connection = self._connection
            connection.send_packed_command([pack_commands(self._unsent)], check_health=False)
            self._sent += len(self._unsent)
            self._unsent = []

    def replies(self) -> list[Any]:
        self._flush()
        out: list[Any] = []
        for _ in range(self._sent):
            try:
                out.append(self._connection.read_response())
            except redis.ResponseError as error:  # an error reply: the stream stays in step
                out.append(error)
        self._read = True
        return out


class ClusterCommands:
    """The same interface over a cluster pipeline: commands are routed by slot, replies come in order."""

    def __init__(self, client: RedisCluster) -> None:
        self._pipe = client.pipeline()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._pipe.reset()

    def send(self, *args: Any) -> None:
        self._pipe.execute_command(*args)

    def replies(self) -> list[Any]:
        return self._pipe.execute(raise_on_error=False)


def command_stream(client: redis.Redis) -> CommandStream | ClusterCommands:
    return ClusterCommands(client) if isinstance(client, RedisCluster) else CommandStream(client)
