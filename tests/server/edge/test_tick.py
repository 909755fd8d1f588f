"""Bounded work per event-loop iteration (server/edge/tick.py): reads past the budget wait for the
next iteration — after the loop's timers, before anything read then — in order, and none is lost.

The protocols here are uvicorn's httptools protocol with what it does on a read replaced by a
record of it, each read costing a millisecond of a fake clock: the tests count iterations and
order, not time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvloop
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from server.edge import tick
from server.edge.protocol import MemoProtocol
from server.edge.tick import TICK_BUDGET, BoundedTick

COST = 0.001  # what each read costs, on the fake clock
BUDGET = 0.0045  # so an iteration feeds five reads (at 0, 1, 2, 3 and 4 ms), then waits


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    fake = Clock()
    monkeypatch.setattr(tick, "_perf", fake)
    tick._ticks.clear()
    yield fake
    tick._ticks.clear()


class Fed(HttpToolsProtocol):
    """What the protocol would do on a read, as a record: which connection, what, when."""

    def __init__(self, name: str, log: list[str], clock: Clock, budget: float, loop: Any) -> None:
        # Not uvicorn's __init__: only what BoundedTick reads.
        self.name = name
        self.log = log
        self.clock = clock
        self.app_state = {TICK_BUDGET: budget}
        self.loop = loop
        self.timeout_keep_alive_task = None

    def data_received(self, data: bytes) -> None:
        self.log.append(f"{self.name}:{data.decode()}")
        self.clock.now += COST

    def eof_received(self) -> None:
        self.log.append(f"{self.name}:eof")

    def connection_lost(self, exc: Exception | None) -> None:
        self.log.append(f"{self.name}:lost")


class Bounded(BoundedTick, Fed):
    """The mixin over the record, as `MemoProtocol` mixes it in over uvicorn's protocol."""


def run(scenario: Any) -> list[str]:
    """Run `scenario(loop, log)` as one callback of a fresh uvloop loop, then let the loop run a
    few iterations; the log, with `|` at the start of every iteration."""
    log: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        iterations = 0

        def mark() -> None:  # runs once per iteration, first: rescheduled for the next one
            nonlocal iterations
            iterations += 1
            log.append("|")
            if iterations < 6:
                loop.call_soon(mark)

        ready = asyncio.Event()

        def first() -> None:
            loop.call_soon(mark)  # from the next iteration on
            scenario(loop, log)
            ready.set()

        loop.call_soon(first)
        await ready.wait()
        for _ in range(8):
            await asyncio.sleep(0)

    uvloop.run(main())
    return log


def iterations(log: list[str]) -> list[list[str]]:
    """The log cut at each iteration's start (the first entry: the scenario's own iteration)."""
    cut: list[list[str]] = [[]]
    for entry in log:
        if entry == "|":
            cut.append([])
        else:
            cut[-1].append(entry)
    return [part for part in cut if part] or [[]]


def test_reads_past_the_budget_wait_for_the_next_iteration_after_its_timers(clock: Clock) -> None:
    def scenario(loop: Any, log: list[str]) -> None:
        loop.call_later(0, log.append, "timer")  # due in the next iteration
        conns = [Bounded(f"c{i}", log, clock, BUDGET, loop) for i in range(8)]
        for conn in conns:  # one loop iteration reading eight ready connections
            conn.data_received(b"GET")

    log = run(scenario)

    fed = [entry for entry in log if entry != "|"]
    assert fed[:5] == ["c0:GET", "c1:GET", "c2:GET", "c3:GET", "c4:GET"]
    # The loop's timer ran before the three that waited: it waited one budget, not all eight.
    assert fed[5:] == ["timer", "c5:GET", "c6:GET", "c7:GET"]
    assert iterations(log)[0] == fed[:5]


def test_without_a_budget_every_read_is_fed_at_once(clock: Clock) -> None:
    def scenario(loop: Any, log: list[str]) -> None:
        loop.call_later(0, log.append, "timer")
        for i in range(8):
            Bounded(f"c{i}", log, clock, 0.0, loop).data_received(b"GET")

    log = run(scenario)

    assert iterations(log)[0] == [f"c{i}:GET" for i in range(8)]


def six_read_then(clock: Clock, data: bytes, then: Callable[[list[Bounded]], None]) -> list[str]:
    """Six connections read `data` in one iteration (the sixth waits: five fit the budget), then
    `then(connections)` in that same iteration; what was fed, in order."""

    def scenario(loop: Any, log: list[str]) -> None:
        conns = [Bounded(f"c{i}", log, clock, BUDGET, loop) for i in range(6)]
        for conn in conns:
            conn.data_received(data)
        then(conns)

    return [entry for entry in run(scenario) if entry != "|"]


def test_a_connection_s_later_data_waits_behind_what_already_waits(clock: Clock) -> None:
    def more(conns: list[Bounded]) -> None:
        conns[5].data_received(b"GET2")  # more of the waiting connection (a pipelined request)
        conns[0].data_received(b"GET2")  # more of one fed already: it waits too, budget spent

    fed = six_read_then(clock, b"GET1", more)
    assert fed == [*(f"c{i}:GET1" for i in range(5)), "c5:GET1GET2", "c0:GET2"]


def test_data_still_waiting_at_a_half_close_is_fed_before_it(clock: Clock) -> None:
    # The peer sent all it will: the answer must still go out.
    fed = six_read_then(clock, b"GET", lambda conns: conns[5].eof_received())
    assert fed == [*(f"c{i}:GET" for i in range(5)), "c5:GET", "c5:eof"]


def test_a_connection_gone_before_its_turn_drops_what_waited(clock: Clock) -> None:
    fed = six_read_then(clock, b"GET", lambda conns: conns[5].connection_lost(None))
    assert fed == [*(f"c{i}:GET" for i in range(5)), "c5:lost"]


def test_the_served_protocol_is_bounded() -> None:
    assert issubclass(MemoProtocol, BoundedTick)
