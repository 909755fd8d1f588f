"""POST routes the HTTP protocol answers once their body is in (server/edge/posts.py), on a real
socket and uvloop: a held request answered by its route's `respond`, and one whose `respond`
faults handed to uvicorn and the ASGI app as the parser gave it — headers, whole body, end.

(`POST /v1/decide` itself, byte for byte against uvicorn's own protocol, is in test_protocol.py.)
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvloop
from uvicorn.config import Config
from uvicorn.server import ServerState

from server.asgi import Receive, Scope, Send
from server.edge.posts import PROTOCOL_POSTS, BodyRoute
from server.edge.protocol import MemoProtocol


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI app: says who answered and echoes the body it read."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Route:
    """A `BodyRoute` as the protocol reads it: what it answers, or a fault."""

    max_body = 1024
    header_limit = 1024
    label = "test"

    def __init__(self, fault: bool) -> None:
        self.fault = fault
        self.answered = 0
        self.seen: list[bytes] = []

    def respond(self, scope: Scope, raw: bytes) -> tuple[int, bytes]:
        self.seen.append(raw)
        if self.fault:
            raise RuntimeError("a fault in the route")
        return 200, b'{"by":"protocol","length":%d}' % len(raw)


class Served:
    def __init__(self, route: Route) -> None:
        self.loop = uvloop.new_event_loop()
        config = Config(app=echo, lifespan="off", access_log=False)
        config.load()
        state = ServerState()
        posts: dict[bytes, BodyRoute | Route] = {b"/post": route}
        app_state: dict[str, Any] = {PROTOCOL_POSTS: posts}

        def factory() -> asyncio.Protocol:
            made = MemoProtocol(config, state, app_state, _loop=self.loop)
            # pytest's log capture hangs handlers on uvicorn's loggers, which reads as an access
            # log to write (the shortcut then answers nothing itself): none is written here.
            made.access_log = False
            made.posts = posts  # type: ignore[assignment]
            return made

        server = self.loop.create_server(factory, "127.0.0.1", 0)
        self.server = self.loop.run_until_complete(server)
        self.port = self.server.sockets[0].getsockname()[1]

    def exchange(self, *pieces: bytes, answers: int = 1) -> list[bytes]:
        """Send `pieces` one read at a time, then read `answers` responses (each with a body)."""
        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.setblocking(False)
        raw = b""
        try:
            for piece in pieces:
                sock.sendall(piece)
                self.loop.run_until_complete(asyncio.sleep(0.02))
            deadline = time.monotonic() + 5
            while raw.count(b"HTTP/1.1 ") < answers or not _whole(raw, answers):
                assert time.monotonic() < deadline, raw
                self.loop.run_until_complete(asyncio.sleep(0.005))
                try:
                    raw += sock.recv(65536)
                except BlockingIOError:
                    continue
        finally:
            sock.close()
        return [b"HTTP/1.1 " + r for r in raw.split(b"HTTP/1.1 ")[1:]]

    def close(self) -> None:
        self.server.close()
        self.loop.run_until_complete(self.server.wait_closed())
        self.loop.close()


def _whole(raw: bytes, answers: int) -> bool:
    parts = raw.split(b"HTTP/1.1 ")[1:]
    for part in parts:
        head, sep, body = part.partition(b"\r\n\r\n")
        length = [int(x.split(b":")[1]) for x in head.split(b"\r\n") if x.startswith(b"content-l")]
        if not sep or (length and len(body) < length[-1]):
            return False
    return len(parts) >= answers


@pytest.fixture(params=[False, True], ids=["answers", "faults"])
def route(request: pytest.FixtureRequest) -> Route:
    return Route(fault=request.param)


@contextmanager
def serving(route: Route) -> Iterator[Served]:
    server = Served(route)
    try:
        yield server
    finally:
        server.close()


def post(body: bytes, path: str = "/post", *headers: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: test", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


BODY = b'{"question": "' + b"x" * 100 + b'"}'


def test_a_held_post_is_answered_by_its_route_or_handed_to_the_app_whole(route: Route) -> None:
    data = post(BODY)
    cut = data.index(b"\r\n\r\n") + 10
    with serving(route) as served:
        (answer,) = served.exchange(data[:cut], data[cut:])  # the body in two reads
    assert route.seen == [BODY]  # held until whole, then offered to the route once
    if route.fault:
        assert answer.endswith(b"\r\n\r\n" + BODY)  # the app read the whole body
        assert route.answered == 0
    else:
        assert answer.endswith(b'{"by":"protocol","length":%d}' % len(BODY))
        assert route.answered == 1


def test_what_is_not_held_goes_to_the_app_and_answers_keep_their_order(route: Route) -> None:
    chunked = (
        b"POST /post HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
    )
    over = post(b"y" * 2000)  # over the route's body limit
    elsewhere = post(BODY, "/other")
    with serving(route) as served:
        answers = served.exchange(chunked + post(BODY) + over + elsewhere, answers=4)
    assert answers[0].endswith(b"\r\n\r\nhello")
    assert answers[2].endswith(b"\r\n\r\n" + b"y" * 2000)
    assert answers[3].endswith(b"\r\n\r\n" + BODY)
    # The POST it could hold came behind a request the app was still answering: it went to the
    # app too, so that the answers keep their order.
    assert route.seen == []
    assert answers[1].endswith(b"\r\n\r\n" + BODY)
