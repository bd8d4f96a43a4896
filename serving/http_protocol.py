"""uvicorn's httptools protocol, answering POSTs to the hot routes itself, without ASGI.

Through ASGI a request builds a scope, an event, a task running the app, a receive
and two sends whose headers are checked one by one, and leaves in two writes (head,
then body). A py-spy profile of a worker at concurrency 8 put about a fifth of its CPU
there. Here a POST to a hot route (`ServingApp.hot`) is read by uvicorn's parser as
usual, handed to the route's own function with its body, and answered in one write.
Everything else (other routes, pipelined requests behind one in flight, `Expect:
100-continue`, upgrades, a concurrency limit) goes through uvicorn's ASGI path unchanged.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from serving.app import Answer, ServingApp

_JSON_HEAD = b"content-type: application/json\r\ncontent-length: %d\r\n"


def hot_routes(app: Any) -> dict[bytes, Answer]:
    """The hot routes of the ServingApp inside uvicorn's middleware (none for any other app)."""
    while not isinstance(app, ServingApp):
        app = getattr(app, "app", None)
        if app is None:
            return {}
    return {path.encode(): answer for path, answer in app.hot.items()}


_rendered: tuple[list[tuple[bytes, bytes]], bytes] = ([], b"")


def _default_headers(headers: list[tuple[bytes, bytes]]) -> bytes:
    """uvicorn's default headers as bytes, rendered again only when it replaces their list (each second, for
    the date): the list itself is kept, so its identity cannot be taken by a new one."""
    global _rendered
    rendered = _rendered
    if rendered[0] is not headers:
        rendered = _rendered = (headers, b"".join(name + b": " + value + b"\r\n" for name, value in headers))
    return rendered[1]


class ServingHttpProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hot = {} if self.root_path or self.limit_concurrency is not None else hot_routes(self.app)

    def on_headers_complete(self) -> None:
        answer = self.hot.get(self.url)
        if (answer is None or self.parser.get_method() != b"POST" or self.expect_100_continue
                or self.parser.should_upgrade() or (self.cycle is not None and not self.cycle.response_complete)):
            super().on_headers_complete()
            return
        self.scope["method"] = "POST"
        self.scope["path"] = self.scope["raw_path"] = self.url.decode()  # type: ignore[typeddict-item]
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        self.cycle = HotRequest(self, answer, keep_alive)  # type: ignore[assignment]


class HotRequest:
    """A hot POST, as uvicorn's protocol sees a request (its `cycle`).

    The protocol appends the body to `body`, clears `more_body` at its end, sets
    `disconnected` when the client goes, `keep_alive` off at shutdown, and calls
    `message_event.set()` after each of these: the answer starts once the body is whole.
    """

    __slots__ = ("protocol", "answer", "scope", "keep_alive", "body", "more_body", "response_complete",
                 "disconnected", "started")

    def __init__(self, protocol: ServingHttpProtocol, answer: Answer, keep_alive: bool) -> None:
        self.protocol = protocol
        self.answer = answer
        self.scope = protocol.scope  # the protocol's is the next request's once that one's head is parsed
        self.keep_alive = keep_alive
        self.body = bytearray()
        self.more_body = True
        self.response_complete = False
        self.disconnected = False
        self.started = False

    @property
    def message_event(self) -> HotRequest:
        return self

    def set(self) -> None:
        protocol = self.protocol
        if self.disconnected or self.started:
            return
        if self.more_body:
            protocol.flow.resume_reading()  # the protocol pauses past 64 KB; the answer needs the whole body
            return
        self.started = True
        task = protocol.loop.create_task(self.respond())
        protocol.tasks.add(task)
        task.add_done_callback(protocol.tasks.discard)

    async def respond(self) -> None:
        protocol = self.protocol
        status, payload = await self.answer(self.scope, bytes(self.body))  # never raises: errors are answers
        if protocol.flow.write_paused and not self.disconnected:  # a client not reading its answers: wait, as
            await protocol.flow.drain()  # uvicorn does, rather than buffer without bound
        if self.disconnected or protocol.transport.is_closing():
            return
        head = [STATUS_LINE[status], _default_headers(protocol.server_state.default_headers), _JSON_HEAD % len(payload)]
        if not self.keep_alive:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        head.append(payload)
        self.response_complete = True
        protocol.transport.write(b"".join(head))
        if not self.keep_alive:
            protocol.transport.close()
        protocol.on_response_complete()
