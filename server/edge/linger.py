"""Lingering close: a request refused before its body was read still reads its refusal.

A client that writes a whole oversized body before reading (curl, most HTTP libraries) would
otherwise get a connection reset instead of its `413`: closing a socket with unread bytes makes
the kernel send RST, and the answer already written is lost with it. nginx drains the rest of the
body first ("lingering close"); so does this mixin, within bounds, since an endless or trickling
body must not hold a connection open:

- uvicorn keeps reading a keep-alive connection after the answer and throws the body away — with
  no bound at all. Here at most `LINGER_BYTES` are thrown away, for at most `LINGER_S` seconds
  after the answer; past either bound the connection is closed.
- A request that asked for `Connection: close`: uvicorn closes right after the answer, unread
  body and all (the reset). Here the close waits until the body has been read, within the same
  bounds.

A mixin for uvicorn's httptools protocol (server/edge/protocol.py `MemoProtocol` and, without the
shortcut, `LingeringProtocol`); nothing changes for a request whose body was read, or that had none.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .accept import BurstAccept
from .keepalive import IdleTimer

# nginx drains for up to 30 s, 5 s between reads; a refused body here is at most a few MB from a
# client writing it at loopback or LAN speed.
LINGER_BYTES = 16 * 1024 * 1024
LINGER_S = 5.0


class _CloseAfterBody:
    """The transport as a refused request's cycle sees it: its `close` waits for the body."""

    def __init__(self, transport: asyncio.Transport, protocol: LingeringClose) -> None:
        self._transport = transport
        self._protocol = protocol
        self.write = transport.write
        self.is_closing = transport.is_closing
        self.get_extra_info = transport.get_extra_info

    def close(self) -> None:
        self._protocol.close_after_body()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class LingeringClose(HttpToolsProtocol):
    """Drain a refused request's body, within `LINGER_BYTES` and `LINGER_S`, before closing."""

    _drained = 0
    _linger: asyncio.TimerHandle | None = None
    _close_pending = False
    _body_done = True

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        parser = self.parser
        cycle = self.cycle
        # A body comes (a length or chunks): until its end, a close the cycle asks for waits.
        has_body = any(
            name in (b"content-length", b"transfer-encoding") for name, _ in self.headers
        )
        self._body_done = not has_body
        self._drained = 0
        if has_body and not parser.should_keep_alive() and cycle is not None:
            cycle.transport = _CloseAfterBody(self.transport, self)  # type: ignore[assignment]

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if cycle is not None and cycle.response_complete and not self._body_done:
            self._drain(len(body))
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._body_done = True
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        super().on_message_complete()
        if self._close_pending:
            self._close_pending = False
            self.transport.close()

    def close_after_body(self) -> None:
        """The answer is sent and the connection is to close: now, or once the body is read."""
        if self._body_done or self.transport.is_closing():
            self.transport.close()
            return
        self._close_pending = True
        self._start_linger()

    def _drain(self, size: int) -> None:
        self._start_linger()
        self._drained += size
        if self._drained > LINGER_BYTES:
            self._give_up()

    def _start_linger(self) -> None:
        if self._linger is None:
            self._linger = self.loop.call_later(LINGER_S, self._give_up)

    def _give_up(self) -> None:
        """Past a bound: close, unread bytes or not (the client had its time to read)."""
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._close_pending = False
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        super().connection_lost(exc)


class LingeringProtocol(BurstAccept, IdleTimer, LingeringClose):
    """uvicorn's httptools protocol with lingering close (`protocol_memo: false`), accepting
    connection bursts at once (server/edge/accept.py), one keep-alive timer per idle spell
    (server/edge/keepalive.py)."""
