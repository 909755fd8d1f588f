"""A loop-lag probe: how long the event loop went without running a ready callback.

A request stuck behind a stall waits for all of it, so a p99 at saturation is set by the longest
stalls rather than by the CPU a request costs. The probe wakes every `interval` seconds and
measures how late it woke (every stall longer than the interval shows, to within the interval);
a `gc.callbacks` hook times each cyclic collection, the stall most often behind a long one, and
keeps the longest of each generation too (a long young collection means many objects survive a
few requests; a long full one, many long-lived tracked objects: issue 15 item 4). All keep the
longest since the previous scrape (`edgeside_loop_stall_max_seconds{source}`: `loop`, `gc`, and
`gc0`-`gc2`), so a benchmark reads the longest stall of the run it just made. Off unless
`loop_probe_ms` is set: it costs a wake-up per interval.

A stall is the loop's own work or a wait: for a core (the machine is busy), for the GIL (a thread
holds it), for a page read. So the probe also keeps the most CPU time the loop's thread spent
between two wake-ups (`loop_cpu`): a stall well above it was mostly waiting (issue 15 item 4).
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

_perf = time.perf_counter
_thread_cpu = time.thread_time  # CPU time of the calling thread: the loop's, in `tick`


class LoopProbe:
    def __init__(self, interval_s: float) -> None:
        self.interval = interval_s
        self.loop_max = 0.0  # the longest lateness of a wake-up since the last `take`
        self.cpu_max = 0.0  # the most CPU time the loop's thread spent between two wake-ups
        self.gc_max = 0.0  # the longest cyclic collection since the last `take`
        self.gc_started = 0.0
        self.gc_by_generation = [0.0, 0.0, 0.0]  # the longest of each generation, likewise

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.gc_started = _perf()
        elif self.gc_started:
            took = _perf() - self.gc_started
            self.gc_max = max(self.gc_max, took)
            generation = info.get("generation", 2)
            if 0 <= generation <= 2 and took > self.gc_by_generation[generation]:
                self.gc_by_generation[generation] = took
            self.gc_started = 0.0

    async def run(self) -> None:
        """Probe until cancelled. A timer callback, not a task sleeping in a loop: each wake-up
        is one plain call (no future, no task step, no coroutine resumed), since at 1 ms it
        runs a thousand times a second on the worker it measures."""
        loop = asyncio.get_running_loop()
        interval = self.interval
        due = _perf() + interval
        cpu = _thread_cpu()
        handle: asyncio.TimerHandle | None = None

        def tick() -> None:
            nonlocal due, handle, cpu
            now = _perf()
            late = now - due
            if late > self.loop_max:
                self.loop_max = late
            used = _thread_cpu()
            if used - cpu > self.cpu_max:
                self.cpu_max = used - cpu
            cpu = used
            due = now + interval
            handle = loop.call_later(interval, tick)

        gc.callbacks.append(self.on_gc)
        try:
            handle = loop.call_later(interval, tick)
            await loop.create_future()  # never set: runs until cancelled
        finally:
            if handle is not None:
                handle.cancel()
            gc.callbacks.remove(self.on_gc)

    def take(self) -> tuple[float, float, tuple[float, ...], float]:
        """(longest loop stall, longest collection, longest collection of each generation, most
        CPU time of the loop between two wake-ups) since the previous call; resets them all."""
        taken = (self.loop_max, self.gc_max, tuple(self.gc_by_generation), self.cpu_max)
        self.loop_max = self.gc_max = self.cpu_max = 0.0
        self.gc_by_generation = [0.0, 0.0, 0.0]
        return taken
