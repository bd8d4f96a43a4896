"""A response's writes of one loop iteration leave as one send, in order, and nothing held is lost."""

from __future__ import annotations

import asyncio
from typing import Any

from serving.http_protocol import CoalescingTransport


class RecordingTransport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.sent.append(data)  # after close too: the tests say what must not arrive

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1234)}.get(name, default)


def run(steps: Any) -> RecordingTransport:
    async def main() -> RecordingTransport:
        inner = RecordingTransport()
        await steps(CoalescingTransport(inner, asyncio.get_running_loop()), inner)  # type: ignore[arg-type]
        return inner
    return asyncio.run(main())


def test_head_and_body_written_in_one_step_leave_as_one_send() -> None:
    async def steps(transport: CoalescingTransport, inner: RecordingTransport) -> None:
        transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        transport.write(b"{}")
        assert inner.sent == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
        await asyncio.sleep(0)
        assert len(inner.sent) == 1
    run(steps)


def test_a_lone_write_leaves_at_the_end_of_the_iteration() -> None:
    async def steps(transport: CoalescingTransport, inner: RecordingTransport) -> None:
        transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        assert inner.sent == []
        await asyncio.sleep(0)
        assert inner.sent == [b"HTTP/1.1 100 Continue\r\n\r\n"]
        transport.write(b"a")
        transport.write(b"b")
        transport.write(b"c")  # a third write starts the next pair
        await asyncio.sleep(0)
        assert inner.sent == [b"HTTP/1.1 100 Continue\r\n\r\n", b"ab", b"c"]
    run(steps)


def test_close_sends_what_is_held_first_and_a_closing_transport_gets_nothing_more() -> None:
    async def steps(transport: CoalescingTransport, inner: RecordingTransport) -> None:
        transport.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        transport.close()
        assert inner.sent == [b"HTTP/1.1 400 Bad Request\r\n\r\n"] and inner.closed
        transport.write(b"late")
        await asyncio.sleep(0)  # the held write finds the transport closing: dropped, as the transport would
        assert inner.sent == [b"HTTP/1.1 400 Bad Request\r\n\r\n"]
    run(steps)


def test_everything_else_is_the_wrapped_transports() -> None:
    async def steps(transport: CoalescingTransport, inner: RecordingTransport) -> None:
        assert transport.get_extra_info("peername") == ("127.0.0.1", 1234)
        assert transport.is_closing() is False
        inner.close()
        assert transport.is_closing() is True
    run(steps)


def test_a_reused_buffer_is_copied_when_held() -> None:
    async def steps(transport: CoalescingTransport, inner: RecordingTransport) -> None:
        buffer = bytearray(b"head")
        transport.write(buffer)  # type: ignore[arg-type]
        buffer[:] = b"XXXX"
        transport.write(b"body")
        assert inner.sent == [b"headbody"]
    run(steps)
