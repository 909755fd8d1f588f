"""The live-stream follower against a real nats-server, in-process: once-only application,
malformed and oversized messages dropped and counted, resume from the stored position."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from pathlib import Path

import nats
import pytest
from nats.js.api import StreamConfig

from bench.brokers import Nats
from server.config import FleetSettings
from server.fleet.link import BrokerLink
from server.fleet.live import Follower
from server.fleet.messages import LiveBatch, LiveEvent, encode_batch
from server.live.store import LiveStore

pytestmark = pytest.mark.integration


def batch(msg_id: str, node: str, *events: LiveEvent) -> bytes:
    return encode_batch(LiveBatch(msg_id, node, list(events)))


async def follow_until(
    settings: FleetSettings,
    store: LiveStore,
    done: Callable[[Follower], bool],
    counts: collections.Counter[str],
) -> Follower:
    """Follow the stream until `done(follower)` (not for a fixed time: a loaded machine only
    makes it slower, a quiet one not slower than it needs)."""
    link = BrokerLink(settings, "b")
    linking = asyncio.create_task(link.run())
    await asyncio.wait_for(link.wait_up(), 10.0)

    def count(result: str, n: float) -> None:
        counts[result] += int(n)

    follower = Follower(link, store, count)
    running = asyncio.create_task(follower.run())
    async with asyncio.timeout(20.0):
        while not done(follower):
            await asyncio.sleep(0.01)
    running.cancel()
    linking.cancel()
    await asyncio.gather(running, linking, return_exceptions=True)
    await link.close()
    return follower


def test_every_message_is_applied_once_and_bad_ones_are_counted(
    broker: Nats, tmp_path: Path
) -> None:
    settings = FleetSettings(broker=broker.url, node="b", max_message_bytes=2048)
    now = time.time()
    view = LiveEvent("cookie:k1", "view", now, content_id="c1", category="tents")

    async def publish_all() -> None:
        nc = await nats.connect(broker.url)
        js = nc.jetstream()
        # The operator's stream takes larger messages than this node accepts.
        await js.add_stream(
            StreamConfig(name=settings.stream, subjects=["edgeside.live.>"], max_msg_size=1 << 20)
        )
        one = batch("a.1.1", "a", view)
        first = await js.publish("edgeside.live.a", one, headers={"Nats-Msg-Id": "a.1.1"})
        again = await js.publish("edgeside.live.a", one, headers={"Nats-Msg-Id": "a.1.1"})
        assert again.duplicate and again.seq == first.seq  # a re-sent publish is kept once
        await js.publish("edgeside.live.a", b"\xc1 not msgpack")
        await js.publish("edgeside.live.a", b"\x93" + b"x" * 10)  # msgpack, wrong shape
        huge = LiveEvent("cookie:k1", "view", now, content_id="c" * 200)
        await js.publish("edgeside.live.a", batch("a.1.2", "a", *[huge] * 20))  # > 2048 bytes
        bad_type = LiveEvent("cookie:k1", "explode", now)
        await js.publish("edgeside.live.a", batch("a.1.3", "a", bad_type))
        # A withdrawal stamped a day ahead would silence the visitor until then: refused.
        ahead = LiveEvent("cookie:k1", "consent", now + 86400, consent=False)
        await js.publish("edgeside.live.a", batch("a.1.4", "a", ahead))
        mine = LiveEvent("cookie:k2", "view", now, content_id="own")
        await js.publish("edgeside.live.b", batch("b.1.1", "b", mine))  # b's own: applied at b
        await nc.close()

    asyncio.run(publish_all())
    store = LiveStore(tmp_path / "live", 16 << 20)
    try:
        counts: collections.Counter[str] = collections.Counter()
        follower = asyncio.run(follow_until(settings, store, lambda f: f.position == 7, counts))
        assert counts["malformed"] == 4 and counts["future"] == 1, counts
        assert counts["applied"] == 1, counts
        rec, _ = store.read("cookie:k1", time.time())
        assert rec is not None and rec.views == ["c1"] and rec.categories == {"tents": 1.0}
        assert rec.consent is None
        assert store.read("cookie:k2", time.time())[0] is None
        assert follower.position == 7 == store.position(settings.stream)

        # A restart resumes after the stored position: nothing is applied twice.
        counts.clear()
        # Waited for: one fetch that found nothing more (the follower says it is caught up).
        asyncio.run(follow_until(settings, store, lambda f: f.lag_s == 0.0, counts))
        assert counts["applied"] == 0 and counts["malformed"] == 0, counts
        rec, _ = store.read("cookie:k1", time.time())
        assert rec is not None and rec.categories == {"tents": 1.0}
    finally:
        store.close()


def test_a_withdrawal_wins_over_older_events_that_arrive_after_it(
    broker: Nats, tmp_path: Path
) -> None:
    settings = FleetSettings(broker=broker.url, node="b")
    t = time.time() - 60

    async def publish_all() -> None:
        nc = await nats.connect(broker.url)
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name=settings.stream, subjects=["edgeside.live.>"]))
        key = "cookie:k1"
        # Node c saw the withdrawal at t+10; node a's view at t+5 reaches the stream later,
        # then a's re-grant at t+20 and a view at t+30, then c's stale grant at t+1.
        await js.publish(
            "edgeside.live.c", batch("c.1", "c", LiveEvent(key, "consent", t + 10, consent=False))
        )
        await js.publish(
            "edgeside.live.a", batch("a.1", "a", LiveEvent(key, "view", t + 5, content_id="old"))
        )
        await js.publish(
            "edgeside.live.a",
            batch(
                "a.2",
                "a",
                LiveEvent(key, "consent", t + 20, consent=True),
                LiveEvent(key, "view", t + 30, content_id="new"),
            ),
        )
        await js.publish(
            "edgeside.live.c", batch("c.2", "c", LiveEvent(key, "consent", t + 1, consent=False))
        )
        await nc.close()

    asyncio.run(publish_all())
    store = LiveStore(tmp_path / "live", 16 << 20)
    try:
        counts: collections.Counter[str] = collections.Counter()
        asyncio.run(follow_until(settings, store, lambda f: f.position == 4, counts))
        rec, _ = store.read("cookie:k1", time.time())
        assert rec is not None
        # The view from before the withdrawal is never recorded, and a stale withdrawal (t+1)
        # does not undo the newer grant (t+20).
        assert rec.views == ["new"] and rec.consent is True, rec
        assert rec.withdrawn_ts == t + 10 and rec.consent_ts == t + 20
    finally:
        store.close()
