"""POSTs to the hot routes are answered by the protocol itself, in one write, and HTTP still behaves.

A real uvicorn server runs the protocol in a thread; the test app answers its hot route
with the body and a header it was sent, and marks the answers that went through ASGI
instead (pipelined requests, `Expect: 100-continue`, other routes), so each test knows
which path served it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import uvicorn
from fastapi import Request
from fastapi.responses import Response
from starlette.datastructures import Headers

from serving.app import ServingApp
from serving.http_protocol import ServingHttpProtocol
from tests.ports import free_port

ROUTE = "/hot"


async def answer(scope: Any, body: bytes) -> tuple[int, bytes]:
    sent = orjson.loads(body)
    await asyncio.sleep(sent.get("sleep", 0))
    status = 200 if "fail" not in sent else 404
    return status, orjson.dumps({"got": sent, "key": Headers(scope=scope).get("x-api-key")})


def make_app() -> ServingApp:
    app = ServingApp()
    app.hot[ROUTE] = answer

    @app.post(ROUTE)
    async def through_asgi(request: Request) -> Response:
        status, payload = await answer(request.scope, await request.body())
        return Response(payload, status, media_type="application/json", headers={"x-via": "asgi"})

    @app.get("/plain")
    async def plain() -> Response:
        return Response(b"plain", media_type="text/plain")

    return app


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(make_app(), host="127.0.0.1", port=port, http=ServingHttpProtocol,
                                           loop="asyncio", lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield port
    server.should_exit = True
    thread.join(10)


def post(body: dict[str, Any], *headers: str, version: str = "1.1") -> bytes:
    raw = orjson.dumps(body)
    lines = [f"POST {ROUTE} HTTP/{version}", "Host: test", "Content-Type: application/json",
             f"Content-Length: {len(raw)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + raw


class Client:
    """A raw HTTP/1.1 connection: what is sent is exactly what the test wrote."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._read()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode().split("\r\n")
        headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines)}
        status = int(status_line.split()[1])
        if status == 100:
            return self.response()
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            self._read()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def closed_by_server(self) -> bool:
        return self.sock.recv(1) == b""

    def _read(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


def test_a_hot_post_is_answered_by_the_protocol_with_the_body_and_headers_it_was_sent(port: int) -> None:
    client = Client(port)
    client.send(post({"n": 1}, "X-API-Key: k1"))
    status, headers, body = client.response()
    assert status == 200 and "x-via" not in headers
    assert orjson.loads(body) == {"got": {"n": 1}, "key": "k1"}
    assert headers["content-type"] == "application/json" and int(headers["content-length"]) == len(body)
    assert {"date", "server"} <= headers.keys()
    client.send(post({"fail": 1}))  # an error status keeps the connection, as a 200 does
    status, headers, body = client.response()
    assert status == 404 and orjson.loads(body)["got"] == {"fail": 1}
    client.close()


def test_keep_alive_and_a_body_in_pieces(port: int) -> None:
    client = Client(port)
    for n in range(3):
        request = post({"n": n, "pad": "x" * 100_000})  # past uvicorn's 64 KB flow-control mark
        client.send(request[:50])
        time.sleep(0.05)
        client.send(request[50:])
        status, headers, body = client.response()
        assert status == 200 and "x-via" not in headers
        assert orjson.loads(body)["got"]["n"] == n
    client.close()


def test_pipelined_requests_are_answered_in_order(port: int) -> None:
    client = Client(port)
    client.send(post({"n": 0, "sleep": 0.1}, "X-API-Key: k0") + post({"n": 1}, "X-API-Key: k1")
                + b"GET /plain HTTP/1.1\r\nHost: t\r\n\r\n" + post({"n": 2}))
    answers = [client.response() for _ in range(4)]
    assert [status for status, _, _ in answers] == [200] * 4
    assert [orjson.loads(answers[i][2])["got"]["n"] for i in (0, 1, 3)] == [0, 1, 2]
    assert [orjson.loads(answers[i][2])["key"] for i in (0, 1, 3)] == ["k0", "k1", None]  # each its own headers
    assert answers[2][2] == b"plain"
    assert "x-via" not in answers[0][1]  # the first is hot; those parsed while it was in flight queue through ASGI
    client.close()


@pytest.mark.parametrize("how", ["Connection: close", "HTTP/1.0"])
def test_a_request_that_asks_to_close_is_answered_then_closed(port: int, how: str) -> None:
    client = Client(port)
    client.send(post({"n": 1}, how) if how.startswith("Connection") else post({"n": 1}, version="1.0"))
    status, headers, body = client.response()
    assert status == 200 and "x-via" not in headers and headers["connection"] == "close"
    assert client.closed_by_server()
    client.close()


def test_expect_100_continue_goes_through_asgi(port: int) -> None:
    client = Client(port)
    request = post({"n": 5}, "Expect: 100-continue")
    head, body = request.split(b"\r\n\r\n", 1)
    client.send(head + b"\r\n\r\n")
    time.sleep(0.05)
    client.send(body)
    status, headers, answer_body = client.response()
    assert status == 200 and headers["x-via"] == "asgi" and orjson.loads(answer_body)["got"] == {"n": 5}
    client.close()


def test_a_client_that_leaves_before_its_answer_harms_nothing(port: int) -> None:
    client = Client(port)
    client.send(post({"n": 1, "sleep": 0.2}))
    client.close()
    time.sleep(0.3)
    again = Client(port)
    again.send(post({"n": 2}))
    assert again.response()[0] == 200
    again.close()


def test_the_date_header_follows_the_clock(port: int) -> None:
    """The default headers are rendered once per list uvicorn makes (each second): a new list shows at once."""
    client = Client(port)
    client.send(post({"n": 1}))
    first = client.response()[1]["date"]
    time.sleep(2.2)  # uvicorn refreshes its default headers every second
    client.send(post({"n": 2}))
    second = client.response()[1]["date"]
    assert first != second
    client.close()
