"""Writes rows into Feast's Redis layout with Feast's rule: a row replaces what is stored only if it is newer.

This is what `feast materialize` does, in the same two pipelined steps: read
each key's `_ts:<view>` (HGET), then write the rows newer than it (HSET of the
timestamp and the values, then EXPIRE when the store sets a key ttl). So a
concurrent writer between the two steps races exactly as it does with Feast.
Each batch's commands are built by Arrow (resp.py) and sent as one buffer;
its writes are answered while the caller encodes the next batch, so Redis and
Python work at the same time on the machine's two cores.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Self

import hiredis
import numpy as np
import pyarrow as pa
import redis
from google.protobuf.timestamp_pb2 import Timestamp

from materializers.batch.encode import concat
from materializers.batch.resp import commands, wire


def stored_nanos(stored: Sequence[bytes | None]) -> np.ndarray:
    """Nanoseconds since the epoch of stored `_ts:<view>` Timestamps (0 where there is none)."""
    out = np.zeros(len(stored), np.int64)
    for i, raw in enumerate(stored):
        if raw:
            stamp = Timestamp.FromString(raw)
            out[i] = stamp.seconds * 1_000_000_000 + stamp.nanos
    return out


class FeastLayoutWriter:
    """Pipelined writes of one view's rows on one connection of the client's pool; use it as a context manager."""

    def __init__(self, client: redis.Redis, ts_field: bytes, fields: Sequence[bytes], expiry_s: int | None) -> None:
        self.pool = client.connection_pool
        self.ts_field = ts_field
        self.fields = list(fields)
        self.expiry = b"%d" % expiry_s if expiry_s else None
        self.conn: redis.connection.AbstractConnection | None = None
        self.owed = 0  # replies of sent writes not read yet
        self.reader = hiredis.Reader(replyError=redis.ResponseError)

    def __enter__(self) -> Self:
        self.conn = self.pool.get_connection()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        assert self.conn is not None
        try:
            if kind is None:
                self._collect()
        finally:
            if kind is not None or self.owed:
                self.conn.disconnect()  # replies left unread would answer the pool's next user
            self.pool.release(self.conn)

    def write(self, keys: pa.BinaryArray, stamps: pa.BinaryArray, nanos: np.ndarray,
              values: Sequence[pa.BinaryArray]) -> int:
        """Write rows newer than what Redis holds (`values` is one array per field); returns how many."""
        assert self.conn is not None, "use FeastLayoutWriter as a context manager"
        self._send(commands(b"HGET", keys, self.ts_field))
        pairs = [part for field, column in zip(self.fields, values) for part in (field, column)]
        writes = commands(b"HSET", keys, self.ts_field, stamps, *pairs)
        if self.expiry:
            writes = concat(writes, commands(b"EXPIRE", keys, self.expiry))
        self._collect()  # the previous batch's writes were answered before these reads
        stored = stored_nanos(self._replies(len(keys)))
        newer = (stored == 0) | (nanos > stored)
        count = int(newer.sum())
        self._send(writes if count == len(keys) else writes.filter(pa.array(newer)))
        self.owed = count * (2 if self.expiry else 1)
        return count

    def _send(self, rows: pa.BinaryArray) -> None:
        assert self.conn is not None
        if len(rows):
            self.conn.send_packed_command([wire(rows)], check_health=False)

    def _collect(self) -> None:
        """Read the replies of the last writes."""
        self._replies(self.owed)
        self.owed = 0

    def _replies(self, count: int) -> list[bytes | int | None]:
        """The next `count` replies, parsed by hiredis straight off the socket; an error reply raises it.

        redis-py's `read_response` costs more than a microsecond a reply, as much as the encoding of a row;
        the connection's socket (redis-py has no public handle on it) fed to a hiredis reader costs a tenth.
        """
        assert self.conn is not None
        sock, reader, out = self.conn._sock, self.reader, []
        try:
            while len(out) < count:
                reply = reader.gets()
                if reply is False:
                    chunk = sock.recv(1 << 20)
                    if not chunk:
                        raise redis.ConnectionError("Redis closed the connection during batch materialization")
                    reader.feed(chunk)
                else:
                    out.append(reply)
        except TimeoutError:
            raise redis.TimeoutError("Redis did not answer batch materialization's writes in time") from None
        for reply in out:
            if isinstance(reply, redis.ResponseError):
                raise reply
        return out
