"""The live store's bounds: list lengths, TTLs, the visitor cap, a full map, category decay."""

from __future__ import annotations

import asyncio
from pathlib import Path

import lmdb
import pytest

from server.config import LiveSettings
from server.live.events import EventIn, Ingest, Pending, drain_forever, live_key
from server.live.store import Change, LiveLimits, LiveStore
from server.visitor import Visitor


def test_lists_are_bounded_and_most_recent_first(tmp_path: Path) -> None:
    store = LiveStore(tmp_path, 16 << 20, LiveLimits(max_list=3))
    try:
        store.apply([Change("k", "view", 0.0, content_id=f"c{i}") for i in range(10)], 100.0)
        store.apply([Change("k", "view", 0.0, content_id="c8")], 100.0)
        rec, stamp = store.read("k", 101.0)
        assert rec is not None and rec.views == ["c8", "c9", "c7"]
        assert rec.seq == 11 and stamp == store.stamp("k") != 0
    finally:
        store.close()


def test_expired_visitors_disappear_and_the_sweeper_caps_the_store(tmp_path: Path) -> None:
    store = LiveStore(tmp_path, 16 << 20, LiveLimits(ttl_s=10.0, max_visitors=5))
    try:
        store.apply([Change(f"v{i}", "view", 0.0, content_id="x") for i in range(8)], 100.0)
        store.apply([Change(f"w{i}", "view", 0.0, content_id="x") for i in range(4)], 105.0)
        assert store.read("v0", 109.0)[0] is not None
        assert store.read("v0", 111.0)[0] is None  # past its TTL: gone for decisions at once
        assert store.count() == 12
        removed = store.sweep(111.0)
        assert removed == 8 and store.count() == 4
        store.apply([Change(f"z{i}", "view", 0.0, content_id="x") for i in range(4)], 112.0)
        store.sweep(112.0)  # 8 live, cap 5: the 3 oldest (w*) go
        assert store.count() == 5
        assert store.read("z3", 112.0)[0] is not None
    finally:
        store.close()


def test_the_sweeper_walks_a_large_store_in_bounded_steps(tmp_path: Path) -> None:
    store = LiveStore(tmp_path, 16 << 20, LiveLimits(ttl_s=10.0))
    try:
        store.apply([Change(f"a{i:03d}", "view", 0.0, content_id="x") for i in range(100)], 0.0)
        store.apply([Change(f"b{i:03d}", "view", 0.0, content_id="x") for i in range(50)], 100.0)
        removed = [store.sweep(105.0, budget=40) for _ in range(5)]
        # 40 + 40 + 20 expired a*, then the b* are alive; every entry was visited in turn.
        assert removed[:3] == [40, 40, 20] and sum(removed) == 100
        assert store.count() == 50
    finally:
        store.close()


def test_categories_decay_with_the_half_life(tmp_path: Path) -> None:
    store = LiveStore(tmp_path, 16 << 20, LiveLimits(half_life_s=100.0))
    try:
        store.apply([Change("k", "view", 1000.0, category="camping")], 1000.0)
        store.apply([Change("k", "view", 1100.0, category="running")], 1100.0)
        rec, _ = store.read("k", 1100.0)
        assert rec is not None and rec.categories == {"camping": 0.5, "running": 1.0}
    finally:
        store.close()


def test_a_full_store_drops_counted_events_and_keeps_serving(tmp_path: Path) -> None:
    store = LiveStore(tmp_path, 256 * 1024, LiveLimits(max_list=50))
    ingest = Ingest(LiveSettings(flush_interval_s=0.01))
    counts: dict[str, float] = {}
    big = "x" * 200
    for i in range(3000):
        e = EventIn(type="view", content_id=f"{big}{i}")
        ingest.put(Pending(e, Visitor(ids={"cookie": f"k{i}"}), 0.0, None, True))

    async def run() -> None:
        def count(result: str, n: float) -> None:
            counts[result] = counts.get(result, 0) + n

        task = asyncio.create_task(
            drain_forever(ingest, store, lambda v: live_key(None, v), lambda b: None, count)
        )
        ingest.wakeup.set()
        for _ in range(500):
            await asyncio.sleep(0.01)
            if not ingest.queue and counts:  # taken from the queue *and* written (or dropped)
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(run())
        assert counts.get("dropped", 0) > 0, counts
        with pytest.raises(lmdb.MapFullError):
            store.apply([Change(f"n{i}", "view", 0.0, content_id=big) for i in range(3000)], 1.0)
        assert store.stamp("nobody") == 0  # reads still work on a full store
    finally:
        store.close()
