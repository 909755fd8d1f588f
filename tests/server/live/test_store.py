"""The live store's bounds: list lengths, TTLs, the visitor cap, a full map, category decay."""

from __future__ import annotations

import asyncio
from pathlib import Path

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


def test_a_flood_past_the_map_evicts_the_oldest_and_keeps_writing(tmp_path: Path) -> None:
    """Regression (issue 14, defect 4): a map filled by a flood stayed full — every later batch,
    withdrawals included, was a counted `MDB_MAP_FULL` drop, and nothing freed space for 7 days.
    Now ordinary events evict the oldest visitors and are stored; the store stays in budget."""
    map_size = 1 << 20
    limits = LiveLimits(max_list=50, evict_sample=256)
    store = LiveStore(tmp_path, map_size, limits)
    ingest = Ingest(LiveSettings(flush_interval_s=0.01))
    counts: dict[str, float] = {}
    big = "x" * 200
    for i in range(6000):  # ~1.5 MB of ids into a 1 MiB map
        e = EventIn(type="view", content_id=f"{big}{i}")
        ingest.put(Pending(e, Visitor(ids={"cookie": f"k{i:05d}"}), float(i), None, True))

    async def run() -> None:
        def count(result: str, n: float) -> None:
            counts[result] = counts.get(result, 0) + n

        task = asyncio.create_task(
            drain_forever(ingest, store, lambda v: live_key(None, v), lambda b: None, count)
        )
        ingest.wakeup.set()
        for _ in range(3000):
            await asyncio.sleep(0.01)
            if not ingest.pending() and counts.get("applied", 0) >= 6000:
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(run())
        assert counts.get("applied") == 6000 and "dropped" not in counts, counts
        assert counts.get("evicted", 0) > 0, counts
        assert store.used_bytes() <= map_size * limits.high_water
        # The newest visitor is there; the oldest went first.
        assert store.read("cookie:k05999", 6000.0)[0] is not None
        assert store.read("cookie:k00000", 6000.0)[0] is None
        # And the store still takes writes without an exception, as many as before.
        more = [Change(f"n{i}", "view", 7000.0, content_id=big) for i in range(3000)]
        written = store.write(more, 7000.0)
        assert written.lost == [] and written.applied == 3000
    finally:
        store.close()


def test_withdrawals_find_room_in_a_full_store_and_are_never_lost(tmp_path: Path) -> None:
    """Regression (issue 14, defect 4): a withdrawal on a full map was dropped, and one in a
    batch with a flood shared the batch's fate. Withdrawals go first, in their own transaction,
    into room ordinary events may not use; refusals are not evicted while anything else can be."""
    map_size = 1 << 20
    limits = LiveLimits(evict_sample=256)
    store = LiveStore(tmp_path, map_size, limits)
    big = "y" * 250
    try:
        # Everyone carted something, then the store is flooded to its high water.
        store.write(
            [Change(f"w{i}", "add_to_cart", 1.0, content_id="tent") for i in range(50)], 1.0
        )
        for round_ in range(8):
            flood = [
                Change(f"f{round_}-{i}", "view", 2.0, content_id=f"{big}{i}") for i in range(500)
            ]
            assert store.write(flood, 2.0).lost == []
        assert store.used_bytes() > map_size * limits.low_water
        # One batch: a flood with 50 withdrawals among it.
        batch: list[Change] = []
        for i in range(50):
            batch += [Change(f"g{i}-{j}", "view", 3.0, content_id=f"{big}{j}") for j in range(40)]
            batch.append(Change(f"w{i}", "consent", 3.0, consent=False))
        written = store.write(batch, 3.0)
        assert written.lost == []
        for i in range(50):
            rec, _ = store.read(f"w{i}", 3.0)
            assert rec is not None and rec.consent is False and rec.cart == [], i
        # Later floods evict others, never the refusals.
        for round_ in range(8):
            flood = [
                Change(f"h{round_}-{i}", "view", 4.0, content_id=f"{big}{i}") for i in range(500)
            ]
            assert store.write(flood, 4.0).lost == []
        assert all(store.read(f"w{i}", 4.0)[0] is not None for i in range(50))
        # After a withdrawal, nothing is recorded again for the visitor.
        store.write([Change("w0", "add_to_cart", 5.0, content_id="tent")], 5.0)
        rec, _ = store.read("w0", 5.0)
        assert rec is not None and rec.cart == []
    finally:
        store.close()


def test_the_sweeper_brings_an_over_budget_store_back_without_a_write(tmp_path: Path) -> None:
    map_size = 1 << 20
    # A lower budget on the second opening: the store is over it with no event coming.
    big = "z" * 250
    store = LiveStore(tmp_path, map_size, LiveLimits())
    try:
        for r in range(4):
            store.write([Change(f"s{r}-{i}", "view", 1.0, content_id=big) for i in range(500)], 1.0)
        used = store.used_bytes()
    finally:
        store.close()
    limits = LiveLimits(high_water=used / map_size / 2, low_water=used / map_size / 3)
    store = LiveStore(tmp_path, map_size, limits)
    try:
        assert store.sweep(2.0) > 0
        assert store.used_bytes() <= map_size * limits.low_water
    finally:
        store.close()


def test_a_store_full_of_refusals_loses_ordinary_events_quickly_and_keeps_refusals(
    tmp_path: Path,
) -> None:
    """Withdrawals for made-up visitors may fill the room above the high water; ordinary events
    then find nothing they may evict: they are lost, counted, in one pass — not halved into
    thousands of fruitless eviction passes — and every refusal stays."""
    map_size = 1 << 20
    limits = LiveLimits(evict_sample=256)
    store = LiveStore(tmp_path, map_size, limits)
    try:
        n = 0
        while store.used_bytes() <= map_size * limits.high_water:
            refusals = [Change(f"r{n + i:07d}", "consent", 1.0, consent=False) for i in range(500)]
            assert store.write(refusals, 1.0).lost == []
            n += 500
        flood = [Change(f"f{i}", "view", 2.0, content_id="x" * 200) for i in range(2000)]
        written = store.write(flood, 2.0)
        assert written.evicted == 0 and len(written.lost) == 2000
        assert all(store.read(f"r{i:07d}", 2.0)[0] is not None for i in range(0, n, 97))
    finally:
        store.close()
