"""Trigger claims and bandit windows shared through a real nats-server's key-value buckets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from bench.brokers import Nats
from rules import ActionDecision, Webhook
from server.config import FleetSettings
from server.fleet.link import BrokerLink
from server.fleet.shared import SharedState
from server.live.store import Change, LiveStore
from server.live.triggers import Triggers
from tests.server.live.test_triggers import SETTINGS, Hook, hook

pytestmark = pytest.mark.integration
__all__ = ["hook"]


@asynccontextmanager
async def shared(url: str, node: str, window_s: float = 60.0) -> AsyncIterator[SharedState]:
    link = BrokerLink(FleetSettings(broker=url, node=node), node)
    task = asyncio.create_task(link.run())
    try:
        await asyncio.wait_for(link.wait_up(), 10.0)
        yield SharedState(link, window_s, 3600.0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await link.close()


def test_a_webhook_fires_once_for_the_whole_fleet(broker: Nats, hook: Hook, tmp_path: Path) -> None:
    hook.fail_first = 0
    stores = [LiveStore(tmp_path / n, 16 << 20) for n in ("a", "b", "c")]
    action = ActionDecision("winback", 10, Webhook(hook.url))

    async def run() -> None:
        async with shared(broker.url, "a") as sa, shared(broker.url, "b") as sb:
            nodes = [Triggers(stores[0], SETTINGS), Triggers(stores[1], SETTINGS)]
            nodes[0].fleet_claim, nodes[1].fleet_claim = sa.claim, sb.claim
            # A third node without the broker decides alone (fail open), as before the fleet.
            alone = Triggers(stores[2], SETTINGS)
            tasks = [asyncio.create_task(t.run()) for t in [*nodes, alone]]
            now = time.time()
            for t in [*nodes, alone]:
                t.offer([action], "p:C1", now)
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline and len(hook.received) < 2:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            assert sorted(n.counts["sent"] for n in nodes) == [0, 1]
            assert sorted(n.counts["deduplicated"] for n in nodes) == [0, 1]
            assert sa.counts["claimed"] + sb.counts["claimed"] == 1
            assert sa.counts["claimed_elsewhere"] + sb.counts["claimed_elsewhere"] == 1

    try:
        asyncio.run(run())
        # Two fires: one for the fleet's two nodes, one for the node deciding alone.
        assert len(hook.received) == 2, hook.received
    finally:
        for s in stores:
            s.close()


def test_every_node_freezes_the_same_bandit_counts(broker: Nats, tmp_path: Path) -> None:
    a, b = LiveStore(tmp_path / "a", 16 << 20), LiveStore(tmp_path / "b", 16 << 20)
    now = time.time()
    # What each node had applied when it froze differs (replication lag).
    a.apply([Change("k1", "view", now, experiment="hero", arm="x")] * 3, now)
    b.apply([Change("k1", "view", now, experiment="hero", arm="x")] * 5, now)
    b.apply([Change("k1", "click", now, experiment="hero", arm="y")], now)
    window_s = 60.0
    nxt = int(now // window_s) + 1

    async def run() -> None:
        async with shared(broker.url, "a", window_s) as sa, shared(broker.url, "b", window_s) as sb:
            await sa.agree(a, now)
            await sb.agree(b, now)

    try:
        asyncio.run(run())
        assert a.frozen_counts("hero", nxt) == b.frozen_counts("hero", nxt) == {"x": (0, 3)}
        # Unagreed (the current window, never created): each node keeps its own view.
        assert a.frozen_counts("hero", nxt - 1) != b.frozen_counts("hero", nxt - 1)
    finally:
        a.close()
        b.close()


def test_without_the_broker_a_claim_is_decided_locally(nats_bin: str, tmp_path: Path) -> None:
    down = Nats(nats_bin, tmp_path / "down")
    link = BrokerLink(FleetSettings(broker=down.url, node="x"), "x")
    state = SharedState(link, 60.0, 3600.0)
    assert asyncio.run(state.claim("winback", "p:C1", 3600.0)) is True
    assert state.counts["local_only"] == 1
