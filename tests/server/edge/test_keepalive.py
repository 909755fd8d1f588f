"""The keep-alive timeout (server/edge/keepalive.py): one timer per idle spell, and a connection
closed exactly when uvicorn's own timer would close it — `timeout_keep_alive` after its last
response if nothing arrived since — never while it is busy.

Each protocol edgeside serves with runs on a real socket, on a loop that counts the timers armed.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from server.asgi import Receive, Scope, Send
from server.edge.linger import LingeringProtocol
from server.edge.protocol import MemoProtocol

TIMEOUT = 0.3
QUESTION = b"GET /anything HTTP/1.1\r\nHost: test\r\n\r\n"


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


class CountingLoop(asyncio.SelectorEventLoop):
    """A loop that counts the keep-alive timers armed on it (uvicorn's or ours)."""

    armed = 0

    def call_at(self, when: float, callback: Any, *args: Any, context: Any = None) -> Any:
        if getattr(callback, "__name__", "") in ("timeout_keep_alive_handler", "_idle_due"):
            self.armed += 1
        return super().call_at(when, callback, *args, context=context)


class Server:
    def __init__(self, protocol: type[Any]) -> None:
        self.loop = CountingLoop()
        config = Config(app=app, timeout_keep_alive=TIMEOUT, lifespan="off", access_log=False)
        config.load()
        state = ServerState()

        def factory() -> asyncio.Protocol:
            made: asyncio.Protocol = protocol(config, state, {}, _loop=self.loop)
            return made

        self.server = self.loop.run_until_complete(self.loop.create_server(factory, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]

    def run(self, seconds: float) -> None:
        self.loop.run_until_complete(asyncio.sleep(seconds))

    def ask(self, sock: socket.socket) -> bytes:
        """One question and its answer, the loop serving while the answer is awaited."""
        sock.sendall(QUESTION)
        raw = b""
        deadline = time.monotonic() + 5
        while b"\r\n\r\n" not in raw and time.monotonic() < deadline:
            self.run(0.005)
            try:
                raw += sock.recv(65536)
            except BlockingIOError:
                continue
        return raw

    def closed(self, sock: socket.socket) -> bool:
        try:
            return sock.recv(1) == b""
        except BlockingIOError:
            return False

    def close(self) -> None:
        self.server.close()
        self.loop.run_until_complete(self.server.wait_closed())
        self.loop.close()


@pytest.fixture(params=[MemoProtocol, LingeringProtocol], ids=["memo", "lingering"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    served = Server(request.param)
    yield served
    served.close()


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.setblocking(False)
    return sock


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(server: Server) -> None:
    with connect(server) as sock:
        asked = time.monotonic()  # (before the answer, so before its timer was armed)
        assert server.ask(sock).startswith(b"HTTP/1.1 204 ")
        server.run(TIMEOUT / 2)
        assert not server.closed(sock)
        while not server.closed(sock):
            assert time.monotonic() - asked < 5, "an idle connection was kept open"
            server.run(0.02)
        assert time.monotonic() - asked >= TIMEOUT  # (a timer never fires early)


def test_a_connection_asked_more_often_than_the_timeout_stays_open(server: Server) -> None:
    with connect(server) as sock:
        started = time.monotonic()
        while time.monotonic() - started < 4 * TIMEOUT:
            assert server.ask(sock).startswith(b"HTTP/1.1 204 ")
            server.run(TIMEOUT / 3)
            assert not server.closed(sock)
        server.run(TIMEOUT * 1.5)
        assert server.closed(sock)  # and once idle, it is closed


def test_one_timer_per_idle_spell_not_one_per_request(server: Server) -> None:
    with connect(server) as sock:
        server.ask(sock)
        before = server.loop.armed
        for _ in range(50):
            assert server.ask(sock).startswith(b"HTTP/1.1 204 ")
        # uvicorn's own protocol arms one per request (50); here the first one is still armed.
        assert server.loop.armed - before <= 2
