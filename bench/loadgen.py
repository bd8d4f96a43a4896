"""A small closed-loop HTTP/1.1 load generator: C keep-alive connections, each sending its next request as soon
as the previous answer is read. Raw asyncio streams on uvloop keep the client's own cost per request far below
an HTTP library's, which matters when client and server share two cores."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import time
from dataclasses import dataclass


@dataclass
class LoadResult:
    latencies_s: list[float]
    errors: int
    seconds: float

    @property
    def rate(self) -> float:
        return len(self.latencies_s) / self.seconds if self.seconds else 0.0


def http_post(path: str, body: bytes, port: int) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def _connection(port: int, requests: itertools.cycle, warm_until: float, stop_at: float,
                      out: list[float], errors: list[int]) -> None:
    """One client connection; a connection the server drops is reopened and counted as an error."""
    while time.perf_counter() < stop_at:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                started = time.perf_counter()
                if started >= stop_at:
                    return
                writer.write(next(requests))
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                if head[9:12] != b"200":
                    errors[0] += 1
                elif started >= warm_until:
                    out.append(time.perf_counter() - started)
        except (ConnectionError, asyncio.IncompleteReadError):
            errors[0] += 1
        finally:
            writer.close()


async def _run(port: int, payloads: list[bytes], concurrency: int, seconds: float, warmup: float) -> LoadResult:
    begin = time.perf_counter()
    warm_until, stop_at = begin + warmup, begin + warmup + seconds
    latencies: list[float] = []
    errors = [0]
    await asyncio.gather(*(
        _connection(port, itertools.cycle(payloads[i::concurrency] or payloads), warm_until, stop_at, latencies,
                    errors)
        for i in range(concurrency)))
    return LoadResult(latencies, errors[0], time.perf_counter() - warm_until)


def _child(queue: multiprocessing.Queue, args: tuple) -> None:  # type: ignore[type-arg]
    import uvloop

    queue.put(uvloop.run(_run(*args)))


def load(port: int, payloads: list[bytes], concurrency: int, seconds: float, warmup: float = 0.3) -> LoadResult:
    """Run the load from a separate process (so the client never shares the server's interpreter)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, (port, payloads, concurrency, seconds, warmup)))
    process.start()
    try:
        return queue.get(timeout=seconds + warmup + 60)
    finally:
        process.join(5)
        if process.is_alive():
            process.kill()
