"""Accept a burst of new connections at once, not one per event-loop iteration.

libuv (under uvloop) accepts one connection each time the loop polls its listening socket, since
libuv 1.45 (libuv pull request 3696; uvloop 0.23 bundles 1.52), and counts on level-triggered
polling for the next one. A loop iteration under load answers every connected client once: 64
clients at ~300 µs a realistic request is ~20 ms. So when 64 connections arrive together (wrk's
start, a proxy refilling its pool after a restart), the k-th is accepted k iterations later: the
last ones 450-790 ms after they connected (issue 15 item 4, measured on one worker with wrk at 64
connections). Their first requests waited that long while every later request was answered within
42 ms of the previous one (packet capture: every answer over 100 ms was a connection's first); and
wrk's coordinated-omission correction turns those 64 answers into ~1 000 samples, so the tail it
reported for a 10 s run (p99 130-280 ms, p99.9 340-630 ms) was this start-up ramp.

Here the first connection a worker accepts on a listening socket finds that socket (by its local
address, among the process's descriptors) and watches a duplicate of it, in the same loop: when
it is readable, up to `ACCEPT_BATCH` pending connections are accepted at once and handed to the
loop with the same protocol, exactly as libuv's own accept would (`connect_accepted_socket`).
libuv keeps accepting too; whichever runs first takes a connection, the other finds none.

Bounded, so several workers sharing one socket still share a burst (a busy worker polls less
often, so takes fewer), and so a flood of connections is not accepted in one go. When uvicorn
closes the listening socket (shutdown) the duplicate is closed at the next readiness, before
accepting anything: no connection is accepted after uvicorn stopped listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import stat
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("edgeside.accept")

# Connections accepted per readiness of a listening socket. Enough for a pool of 64 in two
# iterations of a loaded worker; small enough that workers sharing a socket share a burst.
ACCEPT_BATCH = 32

Factory = Callable[[], asyncio.Protocol]


class BurstListener:
    """A duplicate of one listening socket, read by the worker's loop alongside libuv's accept."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        originals: tuple[int, ...],
        factory: Factory,
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.inode = os.fstat(sock.fileno()).st_ino
        self.originals = originals  # the descriptors uvicorn/libuv listen with
        self.factory = factory
        self.pending: set[asyncio.Task[Any]] = set()
        self.closed = False
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self.ready)

    def listening(self) -> bool:
        """Whether uvicorn still listens: every descriptor it listens with is still this socket."""
        for fd in self.originals:
            try:
                if os.fstat(fd).st_ino != self.inode:
                    return False  # closed, and the number reused for something else
            except OSError:
                return False  # closed
        return True

    def ready(self) -> None:
        if not self.listening():
            self.close()
            return
        tcp = self.sock.family in (socket.AF_INET, socket.AF_INET6)
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ECONNABORTED, EMFILE, ...: libuv's accept meets them too
                log.debug("accepting a connection failed: %s", exc)
                return
            conn.setblocking(False)
            if tcp:  # as uvloop sets on the connections it accepts
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connect = self.loop.connect_accepted_socket(self.factory, conn)
            task = self.loop.create_task(connect)
            self.pending.add(task)
            task.add_done_callback(functools.partial(self._connected, conn))

    def _connected(self, conn: socket.socket, task: asyncio.Task[Any]) -> None:
        self.pending.discard(task)
        if task.cancelled() or task.exception() is not None:
            if not task.cancelled():
                log.debug("a burst-accepted connection failed: %s", task.exception())
            conn.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):  # the loop may be closing already
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        for task in self.pending:
            task.cancel()


# One per listening socket of this process, by its local address (`None`: looked, none usable).
_listeners: dict[object, BurstListener | None] = {}


def watch_listener(
    loop: asyncio.AbstractEventLoop, transport: asyncio.BaseTransport, factory: Factory
) -> None:
    """On a connection's arrival: make sure the socket it came through is watched for bursts."""
    local = transport.get_extra_info("sockname")
    if local is None:
        return
    key = (id(loop), local if isinstance(local, str) else tuple(local))
    known = key in _listeners
    listener = _listeners.get(key)
    if known and (listener is None or not listener.closed):
        return
    _listeners[key] = _find(loop, local, factory)


def _find(loop: asyncio.AbstractEventLoop, local: object, factory: Factory) -> BurstListener | None:
    """The listening socket bound to `local` among this process's descriptors, duplicated and
    watched; None where there is none to find (not Linux, a socket passed in some other way)."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return None
    found: socket.socket | None = None
    originals: list[int] = []
    for fd in fds:
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            candidate = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        try:
            match = (
                candidate.type == socket.SOCK_STREAM
                and candidate.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
                and candidate.getsockname() == local
            )
        except OSError:
            match = False
        if match and (found is None or os.fstat(fd).st_ino == os.fstat(found.fileno()).st_ino):
            originals.append(fd)
            if found is None:
                found = candidate
                continue
        candidate.close()
    if found is None:
        return None
    # Our own duplicate is not one of uvicorn's descriptors.
    originals = [fd for fd in originals if fd != found.fileno()]
    try:
        return BurstListener(loop, found, tuple(originals), factory)
    except (OSError, RuntimeError, NotImplementedError) as exc:
        log.debug("cannot watch the listening socket: %s", exc)
        found.close()
        return None


class BurstAccept(HttpToolsProtocol):
    """uvicorn's httptools protocol whose first connection on a listening socket has that socket
    watched for bursts (`watch_listener`): every protocol edgeside serves with mixes it in."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        factory = functools.partial(
            type(self),
            config=self.config,
            server_state=self.server_state,
            app_state=self.app_state,
            _loop=self.loop,
        )
        watch_listener(self.loop, transport, factory)
