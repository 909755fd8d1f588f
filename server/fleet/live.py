"""Live activity through the broker.

Out: every worker hands the events it just applied locally to its `Outbox`; a task publishes them
as one `LiveBatch` per drain batch on `<subject>.live.<node>` with a message id, re-sending the
same message (same id: JetStream keeps one) until the broker acknowledges it. While the broker is
down the outbox keeps up to `outbox_max` events, the oldest dropped first (counted).

In: one worker per node (the holder of `DATA/.fleet.lock`) follows the stream from the position
stored in the live store, with an ephemeral pull consumer (no consumer state left on the broker
when a node goes away for good), and applies each fetched run of messages in one LMDB write
transaction together with the new position: a message is applied once, whatever crashes or
reconnects happen. Its own node's batches are skipped (applied when accepted). Within a run,
events are applied in timestamp order (stable, so equal times keep stream order); consent is
decided by event time in the store (`consent_ts`, `withdrawn_ts`), so a withdrawal wins over
anything that happened before it, whichever node's message arrives first.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..config import FleetSettings
from ..live.events import Pending, to_change
from ..live.store import Change, LiveStore
from .link import BrokerLink
from .messages import LiveBatch, LiveEvent, Malformed, decode_batch, encode_batch

if TYPE_CHECKING:
    from nats.aio.msg import Msg

log = logging.getLogger("edgeside.fleet")

FETCH_BATCH = 1000
FETCH_WAIT_S = 1.0
DRAIN_WAIT_S = 0.02
PUBLISH_EVENTS = 500  # per message: well under max_message_bytes for events of bounded size

Count = Callable[[str, float], None]


def live_subject(settings: FleetSettings, node: str) -> str:
    return f"{settings.subject}.live.{node}"


async def ensure_stream(link: BrokerLink) -> None:
    """Create the live stream, or leave an existing one as the operator configured it."""
    from nats.js.api import StorageType, StreamConfig
    from nats.js.errors import BadRequestError

    js = link.js
    if js is None:
        return
    s = link.settings
    config = StreamConfig(
        name=s.stream,
        subjects=[f"{s.subject}.live.>"],
        max_age=s.stream_max_age_s,
        max_bytes=s.stream_max_bytes,
        max_msg_size=s.max_message_bytes,
        storage=StorageType.FILE,
        duplicate_window=120.0,
    )
    try:
        await js.add_stream(config)
    except BadRequestError as exc:  # exists with another configuration: the operator's choice
        log.info("fleet: stream %s kept as configured: %s", s.stream, exc)


class Outbox:
    """One worker's events on their way to the broker."""

    def __init__(self, link: BrokerLink, count: Count) -> None:
        self.link = link
        self.settings = link.settings
        self.count = count
        self.events: collections.deque[LiveEvent] = collections.deque()
        self.wakeup = asyncio.Event()
        # Message ids: node, this process's start and a counter — unique across restarts.
        self._prefix = f"{link.node}.{os.getpid()}.{time.time_ns()}"
        self._n = 0
        self._subject = live_subject(self.settings, link.node)

    def offer(self, batch: list[tuple[Pending, str | None]]) -> None:
        """What the drain task just applied locally (the same filter: consent, a live key)."""
        events = self.events
        for p, key in batch:
            if key is None or not (p.consent or p.event.type == "consent"):
                continue
            ch = to_change(p, key)
            events.append(
                LiveEvent(
                    ch.key,
                    ch.type,
                    ch.ts,
                    ch.content_id,
                    ch.category,
                    ch.experiment,
                    ch.arm,
                    ch.consent,
                )
            )
        extra = len(events) - self.settings.outbox_max
        if extra > 0:
            for _ in range(extra):
                events.popleft()
            self.count("outbox_dropped", extra)
        if events:
            self.wakeup.set()

    async def run(self) -> None:
        from nats.errors import NoRespondersError

        pending: tuple[str, bytes, int] | None = None  # a message sent but not acknowledged
        while True:
            if pending is None:
                if not self.events:
                    self.wakeup.clear()
                    await self.wakeup.wait()
                take = [self.events.popleft() for _ in range(min(PUBLISH_EVENTS, len(self.events)))]
                self._n += 1
                msg_id = f"{self._prefix}.{self._n}"
                pending = (msg_id, encode_batch(LiveBatch(msg_id, self.link.node, take)), len(take))
            await self.link.wait_up()
            js = self.link.js
            if js is None:
                await asyncio.sleep(0.2)
                continue
            msg_id, payload, n = pending
            try:
                await js.publish(self._subject, payload, headers={"Nats-Msg-Id": msg_id})
            except Exception as exc:  # timeout or disconnect: the same message again
                log.debug("fleet: publish %s failed: %s", msg_id, exc)
                if isinstance(exc, NoRespondersError):
                    # No stream yet (no node has followed it so far): create it, or try later.
                    with contextlib.suppress(Exception):
                        await ensure_stream(self.link)
                await asyncio.sleep(0.2)
                continue
            self.count("published", n)
            pending = None


class Follower:
    """Applies the live stream to this node's store (one worker per node runs it)."""

    def __init__(
        self, link: BrokerLink, store: LiveStore, count: Count, max_future_s: float = 300.0
    ) -> None:
        self.link = link
        self.store = store
        self.count = count
        # An event time far ahead of this node's clock is refused as POST /v1/events refuses it:
        # a withdrawal stamped next year would otherwise silence a visitor until then.
        self.max_future_s = max_future_s
        # Held while a batch is written in a thread: the app's shutdown takes it before the
        # store is closed (cancelling the task does not stop the thread).
        self.applying = threading.Lock()
        self.stream = link.settings.stream
        self.position = 0
        self.lag_s: float | None = None
        self.caught_up_at: float | None = None

    async def run(self) -> None:
        self.position = await asyncio.to_thread(self.store.position, self.stream)
        while True:
            await self.link.wait_up()
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker gone, consumer expired: start again from position
                log.info(
                    "fleet: following %s stopped (%s); resuming at %d",
                    self.stream,
                    exc,
                    self.position + 1,
                )
                self.lag_s = None
                await asyncio.sleep(0.2)

    async def _follow(self) -> None:
        from nats.errors import TimeoutError as NatsTimeout
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        js = self.link.js
        if js is None:
            raise ConnectionError("not connected")
        await ensure_stream(self.link)
        info = await js.stream_info(self.stream)
        if info.state.last_seq < self.position:
            # The stream was recreated (its sequence starts again): all of it is new to us.
            log.warning(
                "fleet: stream %s restarted at %d (we were at %d); replaying it",
                self.stream,
                info.state.last_seq,
                self.position,
            )
            self.position = 0
        start = self.position + 1
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=max(start, info.state.first_seq or 1),
            ack_policy=AckPolicy.NONE,
            inactive_threshold=60.0,
        )
        sub = await js.pull_subscribe(
            f"{self.link.settings.subject}.live.>", durable=None, stream=self.stream, config=config
        )
        try:
            while True:
                # One message, as soon as it is there (a batch request would wait out its
                # timeout for the rest); then whatever else is there already, without lingering.
                try:
                    msgs = await sub.fetch(1, timeout=FETCH_WAIT_S)
                except NatsTimeout:
                    self.lag_s = 0.0
                    continue
                with contextlib.suppress(NatsTimeout):
                    msgs += await sub.fetch(FETCH_BATCH, timeout=DRAIN_WAIT_S)
                await self._apply(msgs)
        finally:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # a dead connection has no subscription to remove
                log.debug("fleet: unsubscribe: %s", exc)

    async def _apply(self, msgs: list[Msg]) -> None:
        limit = self.link.settings.max_message_bytes
        changes: list[Change] = []
        last = self.position
        newest_ts: float | None = None
        pending = 0
        for msg in msgs:
            meta = msg.metadata
            seq: int = meta.sequence.stream
            if seq <= last:
                self.count("duplicate", 1)
                continue
            last = seq
            newest_ts = meta.timestamp.timestamp()
            pending = meta.num_pending
            try:
                batch = decode_batch(msg.data, limit)
            except Malformed as exc:
                self.count("malformed", 1)
                log.warning("fleet: live message %d dropped: %s", seq, str(exc)[:200])
                continue
            if batch.node == self.link.node:
                continue  # accepted (and applied) here
            horizon = time.time() + self.max_future_s
            for e in batch.events:
                if e.ts > horizon:
                    self.count("future", 1)
                    continue
                changes.append(
                    Change(
                        e.key,
                        e.type,
                        e.ts,
                        e.content_id,
                        e.category,
                        e.experiment,
                        e.arm,
                        e.consent,
                    )
                )
        if last == self.position:
            return
        changes.sort(key=lambda ch: ch.ts)  # stable: equal times keep the stream's order
        applied = await asyncio.to_thread(self._write, changes, last)
        self.position = last
        self.count("applied", applied)
        now = time.time()
        self.lag_s = round(now - newest_ts, 3) if pending and newest_ts is not None else 0.0
        if not pending:
            self.caught_up_at = now

    def _write(self, changes: list[Change], last: int) -> int:
        with self.applying:
            return self.store.apply(changes, time.time(), (self.stream, last))
