"""Bounded work per event-loop iteration: what arrives after the budget waits for the next one.

A loop iteration reads every connection that is ready and, for each, parses and answers what came
in: at saturation, with 64 connections kept busy, one iteration answers all 64 requests
(server/edge/protocol.py decides them without an `await`). That is the event loop's longest
stall: ~7 ms at ~107 µs a realistic request on a quiet machine, 11-24 ms on a loaded one, and
everything the loop would do besides — a timer, a newly accepted connection, a health check, a
scrape, the background tasks — waits behind the whole batch (issue 15 item 4).

Here, once a loop iteration has spent `budget` seconds answering (from its first read), the data
of every further connection is set aside with `call_soon` and fed to the parser in the next
iteration, before anything read then (asyncio runs the callbacks queued in one iteration at the
start of the next, before it polls again), with a fresh budget. Nothing is reordered: a connection
whose data waits takes its later data behind it; nothing is lost: data still waiting when the peer
half-closes is fed at once (the answer goes out before the close), and only a connection that is
gone drops what waited. Requests are answered exactly as before, a few at a time: between two
shares the loop runs its timers and polls, so a stall is about one budget plus one request.

Off by default (`tick_budget_ms: 0`): at saturation it costs p99. Measured on a quiet machine at 64
connections, budget 8 ms against none: longest stall 8.5-9.7 vs 10.8-12.5 ms, but p99 ~16-17 vs
11-13 ms once batches are split (a read just past the budget waits for the rest of its iteration
and the next); see docs/server.md, "the batch itself".
"""

from __future__ import annotations

import asyncio
import time

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# The lifespan state key holding the budget in seconds (0 or absent: no bound).
TICK_BUDGET = "edgeside.tick_budget_s"

_perf = time.perf_counter


class Tick:
    """One event loop's share of work: opened by the first read of an iteration, closed by a
    callback that runs at the start of the next."""

    def __init__(self, loop: asyncio.AbstractEventLoop, budget_s: float) -> None:
        self.loop = loop
        self.budget = budget_s
        self.opened = 0.0  # when the current share began; 0.0 when none is open

    def spent(self) -> bool:
        """Whether this iteration has used its budget (a read now should wait for the next)."""
        now = _perf()
        if not self.opened:
            self.opened = now
            self.loop.call_soon(self._close)  # queued before any read this share sets aside
            return False
        return now - self.opened > self.budget

    def _close(self) -> None:
        self.opened = 0.0


_ticks: dict[int, Tick] = {}


def tick_of(loop: asyncio.AbstractEventLoop, budget_s: float) -> Tick:
    """The `Tick` of `loop` (one per loop: every connection of a worker shares its iterations)."""
    tick = _ticks.get(id(loop))
    if tick is None or tick.loop is not loop:  # (an id reused by a later loop)
        tick = _ticks[id(loop)] = Tick(loop, budget_s)
    return tick


class BoundedTick(HttpToolsProtocol):
    """uvicorn's httptools protocol whose reads beyond the iteration's budget wait for the next
    iteration (`Tick`); the budget comes from the app's lifespan state (`TICK_BUDGET`)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        budget = float(self.app_state.get(TICK_BUDGET, 0.0) or 0.0)
        self.tick = tick_of(self.loop, budget) if budget > 0 else None
        self.waiting: list[bytes] | None = None  # data set aside, in arrival order
        self.gone = False

    def data_received(self, data: bytes) -> None:
        waiting = self.waiting
        if waiting is not None:
            waiting.append(data)  # behind what already waits: order kept
            return
        tick = self.tick
        if tick is not None and tick.spent():
            self.waiting = [data]
            # As uvicorn does when data arrives: the keep-alive timer must not close a
            # connection whose request waits.
            self._unset_keepalive_if_required()
            self.loop.call_soon(self._feed)
            return
        super().data_received(data)

    def _feed(self) -> None:
        """Feed what waited (called at the start of the next iteration, or at a half-close)."""
        waiting, self.waiting = self.waiting, None
        if waiting is None or self.gone:
            return
        data = waiting[0] if len(waiting) == 1 else b"".join(waiting)
        if self.tick is not None and self.tick.spent():
            self.waiting = [data]  # this iteration's budget is gone too: first in the next
            self.loop.call_soon(self._feed)
            return
        super().data_received(data)

    def eof_received(self) -> None:
        # The peer sent all it will: answer what waits now, before the transport closes.
        if self.waiting is not None:
            waiting, self.waiting = self.waiting, None
            super().data_received(b"".join(waiting))
        super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self.waiting = None  # nobody to answer
        super().connection_lost(exc)
