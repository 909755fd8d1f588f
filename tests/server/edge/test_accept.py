"""A burst of connections is accepted at once (server/edge/accept.py), answered exactly, and never
after uvicorn stopped listening.

The loop tests count event-loop iterations, not time: a callback that reschedules itself with
`call_soon` runs once per iteration, and libuv polls the listening socket once per iteration.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest
import uvloop

from bench.procs import Edgeside, edgeside
from server.edge import accept
from server.offline.demo import ensure_demo

BURST = 40


class Counted(asyncio.Protocol):
    """A connection that only counts itself; with `watching`, its arrival watches the listener."""

    made: ClassVar[list[Counted]] = []

    def __init__(self, loop: asyncio.AbstractEventLoop, watching: bool) -> None:
        self.loop = loop
        self.watching = watching

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        Counted.made.append(self)
        if self.watching:
            accept.watch_listener(self.loop, transport, self.factory())

    def factory(self) -> Callable[[], asyncio.Protocol]:
        return lambda: Counted(self.loop, self.watching)


def connect(port: int) -> socket.socket:
    """A client connection: established by the kernel (the listen backlog), not yet accepted."""
    client = socket.create_connection(("127.0.0.1", port))
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client


async def iterations_to_accept(watching: bool, clients: list[socket.socket]) -> tuple[int, Any]:
    """Loop iterations until a burst of BURST connections (after a first one) is accepted."""
    loop = asyncio.get_running_loop()
    Counted.made = []
    server = await loop.create_server(lambda: Counted(loop, watching), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clients.append(connect(port))
    while not Counted.made:  # the first connection: it finds the listening socket
        await asyncio.sleep(0)
    clients.extend(connect(port) for _ in range(BURST))

    done = loop.create_future()
    count = 0

    def tick() -> None:
        nonlocal count
        count += 1
        if len(Counted.made) == BURST + 1 or count > 10 * BURST:
            done.set_result(count)
        else:
            loop.call_soon(tick)

    loop.call_soon(tick)
    iterations = await done
    return iterations, server


@pytest.fixture()
def clients() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for client in opened:
        client.close()


async def stop(server: asyncio.AbstractServer) -> None:
    """Close the server, every connection it made, and the listeners watched for it."""
    server.close()
    for made in Counted.made:
        made.transport.close()
    await server.wait_closed()
    loop = asyncio.get_running_loop()
    for key, listener in list(accept._listeners.items()):
        if key[0] == id(loop):
            if listener is not None:
                listener.close()
            del accept._listeners[key]
    await asyncio.sleep(0)


def run(coro: Any) -> Any:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def test_libuv_alone_accepts_one_connection_per_iteration(clients: list[socket.socket]) -> None:
    """The behaviour accept.py works around (libuv >= 1.45). If this fails, libuv accepts in a
    loop again and server/edge/accept.py may no longer be needed."""

    async def main() -> int:
        iterations, server = await iterations_to_accept(False, clients)
        await stop(server)
        return int(iterations)

    assert run(main()) >= BURST
    assert len(Counted.made) == BURST + 1


def test_a_burst_is_accepted_in_a_few_iterations(clients: list[socket.socket]) -> None:
    async def main() -> int:
        iterations, server = await iterations_to_accept(True, clients)
        await stop(server)
        return int(iterations)

    iterations = run(main())
    assert len(Counted.made) == BURST + 1
    # ACCEPT_BATCH per readiness, then a task and connection_made: a handful, not BURST.
    assert iterations <= 2 * (BURST // accept.ACCEPT_BATCH + 1) + 2


def test_no_connection_is_accepted_after_the_server_stopped_listening(
    clients: list[socket.socket],
) -> None:
    async def main() -> tuple[bool, int, bool]:
        loop = asyncio.get_running_loop()
        _, server = await iterations_to_accept(True, clients)
        try:
            port = server.sockets[0].getsockname()[1]
            watched = [
                v for k, v in accept._listeners.items() if k[0] == id(loop) and k[1][1] == port
            ]
            listener = watched[0] if watched else None
            server.close()
            await server.wait_closed()
            made = len(Counted.made)
            late = connect(port)  # a duplicate still listening: the kernel completes it
            clients.append(late)
            for _ in range(20):
                await asyncio.sleep(0)
            closed = listener is not None and listener.closed
            return listener is not None, len(Counted.made) - made, closed
        finally:
            await stop(server)

    watching, accepted_late, closed = run(main())
    assert watching
    assert accepted_late == 0
    assert closed  # the duplicate saw uvicorn's socket closed and closed itself
    late = clients[-1]
    late.settimeout(5)
    with contextlib.suppress(ConnectionResetError):  # a listener closed with it pending
        assert late.recv(1) == b""


# --- a real server: a burst of questions, every answer exact ---------------------------------


@pytest.fixture(scope="module", params=[True, False], ids=["protocol", "asgi"])
def serving(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Edgeside]:
    home = tmp_path_factory.mktemp("accept")
    data = home / "data"
    ensure_demo(data)
    config = home / "edgeside.json"
    config.write_text('{"protocol_memo": %s}' % ("true" if request.param else "false"))
    with edgeside(data, args=["--config", str(config)], log_dir=home) as server:
        yield server
    shutil.rmtree(data, ignore_errors=True)


QUESTION = (
    b"GET /v1/edge?p=home_hero,home_recs&site=shop-fr HTTP/1.1\r\nHost: shop.example\r\n"
    b"Cookie: edgeside_id=c-alice\r\nCF-IPCity: test-accept\r\n\r\n"
)


def answer(sock: socket.socket) -> bytes:
    """One response without a body (a 204) read whole, without its `date` line."""
    sock.settimeout(30)
    raw = b""
    while b"\r\n\r\n" not in raw:
        chunk = sock.recv(65536)
        assert chunk, raw
        raw += chunk
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert rest == b""
    return b"\r\n".join(x for x in head.split(b"\r\n") if not x.lower().startswith(b"date: "))


def test_a_burst_of_new_connections_gets_exact_answers(serving: Edgeside) -> None:
    port = int(serving.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as first:
        first.sendall(QUESTION)
        reference = answer(first)
    assert reference.startswith(b"HTTP/1.1 204 ")
    burst = [socket.create_connection(("127.0.0.1", port)) for _ in range(64)]
    try:
        for sock in burst:
            sock.sendall(QUESTION)
        assert {answer(sock) for sock in burst} == {reference}
        for sock in burst:  # and each connection stays in step for the next question
            sock.sendall(QUESTION)
        assert {answer(sock) for sock in burst} == {reference}
    finally:
        for sock in burst:
            sock.close()
