"""Writes rows into Feast's Redis layout with Feast's rule: a row replaces what is stored only if it is newer.

This is what `feast materialize` does, in two pipelined steps: read the
stored `_ts:<view>` of the keys, then write the rows newer than it (HSET of the
timestamp and the values, then EXPIRE when the store sets a key ttl). So a
concurrent writer between the two steps races exactly as it does with Feast.
Commands are built by Arrow (resp.py), a batch of rows to a buffer. The writes
go to the socket from a thread, so Redis applies one batch while Python
encodes the next, and their replies are read when the writer closes.
"""

from __future__ import annotations

from collections.abc import Sequence
from queue import Queue
from threading import Thread
from types import TracebackType
from typing import Self

import hiredis
import numpy as np
import pyarrow as pa
import redis
from google.protobuf.timestamp_pb2 import Timestamp

from featurestream.online.leases import PooledConnection
from materializers.batch.encode import concat
from materializers.batch.resp import commands, grouped, wire

_QUEUED_BATCHES = 2  # encoded write batches waiting for the socket: enough to keep Redis busy, and bounded
EXISTS_GROUP = 64  # keys per EXISTS: few enough that one stored key costs few needless reads


def stored_nanos(stored: Sequence[bytes | None]) -> np.ndarray:
    """Nanoseconds since the epoch of stored `_ts:<view>` Timestamps (0 where there is none)."""
    out = np.zeros(len(stored), np.int64)
    for i, raw in enumerate(stored):
        if raw:
            stamp = Timestamp.FromString(raw)
            out[i] = stamp.seconds * 1_000_000_000 + stamp.nanos
    return out


def newer(nanos: np.ndarray, held: np.ndarray) -> np.ndarray:
    """Feast's rule: which rows replace what is stored (nothing stored, or an older timestamp)."""
    return (held == 0) | (nanos > held)


class FeastLayoutWriter:
    """One view's reads and writes on one connection of the client's pool; use it as a context manager.

    Read the `stored` timestamps of the keys, then `write` the rows newer than them (the caller
    compares, so it can skip encoding the others). `written` counts the rows written.
    """

    def __init__(self, client: redis.Redis, ts_field: bytes, fields: Sequence[bytes], expiry_s: int | None) -> None:
        self.client = client
        self.ts_field = ts_field
        self.fields = list(fields)
        self.expiry = b"%d" % expiry_s if expiry_s else None
        self.lease: PooledConnection | None = None
        self.conn: redis.connection.AbstractConnection | None = None
        self.owed = 0  # replies of queued writes not read yet
        self.written = 0
        self.reader = hiredis.Reader(replyError=redis.ResponseError)
        self.queue: Queue[pa.BinaryArray | None] = Queue(_QUEUED_BATCHES)
        self.sender = Thread(target=self._send_queued, name="feast-layout-writer", daemon=True)
        self.send_error: BaseException | None = None

    def __enter__(self) -> Self:
        self.lease = PooledConnection(self.client)
        self.conn = self.lease.connection
        self.sender.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        assert self.lease is not None
        try:
            self.queue.put(None)
            self.sender.join()
            if kind is None:
                self._raise_send_error()
                self._replies(self.owed)
                self.owed = 0
        finally:
            self.lease.give_back(in_step=kind is None and not self.owed)

    def stored(self, keys: pa.BinaryArray) -> np.ndarray:
        """Nanoseconds since the epoch of these keys' stored timestamps (0 where there is none), in order.

        Redis is asked first whether any of a group of keys exists (EXISTS costs it about a tenth of an HGET
        per key), and reads the timestamps of the groups that have one: a first materialization reads none.
        """
        assert self.conn is not None and not self.owed, "read the stored timestamps before the first write"
        self._send(grouped(b"EXISTS", keys, EXISTS_GROUP))
        found = np.asarray(self._replies(-(-len(keys) // EXISTS_GROUP)), np.int64)
        read = np.flatnonzero(np.repeat(found > 0, EXISTS_GROUP)[:len(keys)])
        out = np.zeros(len(keys), np.int64)
        if len(read):
            self._send(commands(b"HGET", keys.take(pa.array(read)), self.ts_field))
            out[read] = stored_nanos(self._replies(len(read)))
        return out

    def write(self, keys: pa.BinaryArray, stamps: pa.BinaryArray, values: Sequence[pa.BinaryArray]) -> None:
        """Queue these rows' writes (`values` is one array per field): the caller has kept only newer rows."""
        assert self.conn is not None, "use FeastLayoutWriter as a context manager"
        self._raise_send_error()
        if not len(keys):
            return
        pairs = [part for field, column in zip(self.fields, values) for part in (field, column)]
        writes = commands(b"HSET", keys, self.ts_field, stamps, *pairs)
        if self.expiry:
            writes = concat(writes, commands(b"EXPIRE", keys, self.expiry))
        self.queue.put(writes)
        self.owed += len(keys) * (2 if self.expiry else 1)
        self.written += len(keys)

    def _send_queued(self) -> None:
        """The sender thread: a blocked send waits for Redis with the GIL released, while Python encodes."""
        while (rows := self.queue.get()) is not None:
            if self.send_error is None:
                try:
                    self._send(rows)
                except BaseException as exc:  # re-raised by the caller's next write or the exit
                    self.send_error = exc

    def _raise_send_error(self) -> None:
        if self.send_error is not None:
            raise self.send_error

    def _send(self, rows: pa.BinaryArray) -> None:
        assert self.conn is not None
        if len(rows):
            self.conn.send_packed_command([wire(rows)], check_health=False)

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
