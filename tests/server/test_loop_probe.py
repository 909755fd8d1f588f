"""The loop-lag probe (server/loop_probe.py): what it keeps between scrapes. No timings asserted:
the stalls are made with a collection and a blocking call, and only their order is checked."""

from __future__ import annotations

import asyncio
import gc
import time

from server.loop_probe import LoopProbe


def test_a_blocked_loop_and_a_collection_are_seen_and_a_take_starts_afresh() -> None:
    probe = LoopProbe(0.001)

    async def main() -> tuple[float, float, tuple[float, ...], float]:
        task = asyncio.create_task(probe.run())
        await asyncio.sleep(0.01)
        probe.take()  # a fresh window
        time.sleep(0.05)  # block the loop: the probe wakes late
        spin = time.thread_time() + 0.02
        while time.thread_time() < spin:  # and work on it: 20 ms of the loop thread's CPU
            pass
        gc.collect()  # a full collection: generation 2
        await asyncio.sleep(0.01)
        taken = probe.take()
        task.cancel()
        return taken

    loop_stall, collection, by_generation, loop_cpu = asyncio.run(main())
    assert loop_stall >= 0.06  # it slept 0.05 s and worked 0.02 s past a 0.001 s wake-up
    # Of which the loop's own work: at least the 20 ms spun, not the 50 ms slept.
    assert 0.02 <= loop_cpu < loop_stall
    assert collection > 0.0
    assert by_generation[2] > 0.0  # the full one is seen as such
    assert max(by_generation) == collection
    assert probe.take() == (0.0, 0.0, (0.0, 0.0, 0.0), 0.0)
    assert probe.on_gc not in gc.callbacks  # removed when the probe stops
