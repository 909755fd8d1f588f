"""One worker's part in the fleet, started and stopped with the app.

Every worker keeps a broker connection and publishes the events it accepted. One worker per node —
whichever holds `flock(DATA/.fleet.lock)`; another takes over when it dies — follows the live
stream into the node's store, sends the node's heartbeat and follows published snapshots.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import auth
from ..asgi import error_body
from ..lifecycle.pull import take_lock
from ..live.events import Pending
from ..metrics import Counter, Gauge
from .link import BrokerLink
from .live import Follower, Outbox, ensure_stream
from .messages import Heartbeat, encode_json
from .shared import SharedState
from .snapshots import SnapshotFollower
from .status import nodes_bucket, read_beats, report

if TYPE_CHECKING:
    from ..lifecycle.pipeline import Lifecycle
    from ..state import AppState

log = logging.getLogger("edgeside.fleet")

LOCK_RETRY_S = 2.0


def node_name(configured: str, port: int) -> str:
    name = configured or f"{socket.gethostname()}-{port}"
    # A NATS subject token and a KV key: no dots, spaces or wildcards.
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:128]


class FleetMetrics:
    def __init__(self, state: AppState) -> None:
        self.broker_up = Gauge(
            "edgeside_fleet_broker_up", "1 while this worker is connected to the fleet's broker."
        )
        self.live = Counter(
            "edgeside_fleet_live_messages_total",
            "Live-stream traffic by result: published (events), applied (events), malformed "
            "and duplicate (messages), future (events stamped beyond live.max_future_s), "
            "outbox_dropped (events lost while the broker was down).",
            ("result",),
        )
        self.lag = Gauge(
            "edgeside_fleet_live_lag_seconds",
            "Age of the newest live-stream message applied while more were pending (0: caught up).",
        )
        self.snapshots = Counter(
            "edgeside_fleet_snapshots_total",
            "Published snapshots by outcome (activated, unchanged, refused, failed, malformed).",
            ("result",),
        )
        self.s3_requests = Counter(
            "edgeside_fleet_s3_requests_total",
            "Requests this node made to object storage: pointer (polls) and archive (downloads; "
            "none for an archive that came inline in its announcement).",
            ("request",),
        )
        self.shared = Gauge(
            "edgeside_fleet_shared_total",
            "Fleet-wide trigger claims and bandit windows by outcome (claimed, "
            "claimed_elsewhere, local_only: decided without the broker, malformed).",
            ("result",),
        )
        state.metrics.extra.extend(
            [self.broker_up, self.live, self.lag, self.snapshots, self.s3_requests, self.shared]
        )

    def count_live(self, result: str, n: float) -> None:
        self.live.inc((result,), n)

    def count_snapshot(self, result: str, n: float) -> None:
        self.snapshots.inc((result,), n)

    def count_s3(self, request: str) -> None:
        self.s3_requests.inc((request,), 1)


class FleetNode:
    def __init__(self, state: AppState, life: Lifecycle | None) -> None:
        self.state = state
        self.life = life
        self.settings = state.settings.fleet
        self.node = node_name(self.settings.node, state.settings.port)
        self.link = BrokerLink(self.settings, self.node)
        self.metrics = FleetMetrics(state)
        self.outbox = Outbox(self.link, self.metrics.count_live)
        self.follower: Follower | None = None
        live = state.settings.live
        self.shared = SharedState(self.link, live.bandit_window_s, live.trigger_window_s)
        self.snapshots: SnapshotFollower | None = None
        if self.settings.snapshots_from and life is not None:
            self.snapshots = SnapshotFollower(
                self.settings,
                self.link if self.settings.broker else None,
                life,
                state.holder,
                self.metrics.count_snapshot,
                max_bytes=state.settings.max_upload_bytes,
                timeout_s=state.settings.pull_timeout_s,
                count_s3=self.metrics.count_s3,
            )
        self.leader = False
        self.started_at = time.time()
        self._tasks: list[asyncio.Task[None]] = []
        self._lock_fd: int | None = None
        state.before_scrape.append(self._refresh)

    @classmethod
    def create(cls, state: AppState, life: Lifecycle | None) -> FleetNode | None:
        """None without a broker or object storage: the node works alone, as before."""
        fleet = state.settings.fleet
        return cls(state, life) if fleet.broker or fleet.snapshots_from else None

    # -- wiring -----------------------------------------------------------------------------------

    def offer(self, batch: list[tuple[Pending, str | None]]) -> None:
        self.outbox.offer(batch)

    def notes(self) -> list[str]:
        notes = [self.link.note() if self.settings.broker else None]
        if self.snapshots is not None:
            notes.append(self.snapshots.note())
        return [n for n in notes if n]

    def _refresh(self) -> None:
        self.metrics.broker_up.set((), 1.0 if self.link.up else 0.0)
        for result, n in self.shared.counts.items():
            self.metrics.shared.set((result,), n)
        lag = self.follower.lag_s if self.follower is not None else None
        if lag is not None:
            self.metrics.lag.set((), lag)

    async def start(self) -> None:
        if self.settings.broker:
            self._tasks.append(asyncio.create_task(self.link.run()))
            if self.state.live is not None:
                self._tasks.append(asyncio.create_task(self.outbox.run()))
            if self.state.triggers is not None:
                self.state.triggers.fleet_claim = self.shared.claim
        self._tasks.append(asyncio.create_task(self._lead()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        # A write still running in its thread ends before the store is closed.
        follower = self.follower
        if follower is not None and await asyncio.to_thread(follower.applying.acquire, True, 10.0):
            follower.applying.release()
        await self.link.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def _lead(self) -> None:
        """Become the node's follower when this worker gets the lock (now or when another dies)."""
        data = Path(self.state.settings.data or ".")
        while self._lock_fd is None:
            self._lock_fd = take_lock(data, ".fleet.lock")
            if self._lock_fd is None:
                await asyncio.sleep(LOCK_RETRY_S)
        self.leader = True
        jobs = []
        store = self.state.live
        if self.settings.broker:
            jobs.append(self._heartbeats())
            if store is not None:
                self.follower = Follower(
                    self.link,
                    store,
                    self.metrics.count_live,
                    self.state.settings.live.max_future_s,
                )
                jobs.append(self.follower.run())
                jobs.append(self.shared.agree_forever(store))
        if self.snapshots is not None:
            jobs.append(self.snapshots.run())
        await asyncio.gather(*jobs)

    # -- heartbeats -------------------------------------------------------------------------------

    def heartbeat(self) -> Heartbeat:
        ready, warnings = self.state.readiness()
        f = self.follower
        return Heartbeat(
            node=self.node,
            at=time.time(),
            started_at=self.started_at,
            ready=ready,
            versions=dict(self.state.holder.current.versions),
            live_lag_s=f.lag_s if f is not None else None,
            live_position=f.position if f is not None else 0,
            broker="up" if self.link.up else "down",
            notes=warnings[:16],
        )

    async def _heartbeats(self) -> None:
        s = self.settings
        while True:
            await self.link.wait_up()
            try:
                js = self.link.js
                if js is None:
                    raise ConnectionError("not connected")
                await ensure_stream(self.link)
                kv = await nodes_bucket(js, s.subject, s.stale_after_s)
                while True:
                    await kv.put(self.node, encode_json(self.heartbeat()))
                    await asyncio.sleep(s.heartbeat_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker gone: beat again once it is back
                log.info("fleet: heartbeat failed: %s", exc)
                await asyncio.sleep(min(s.heartbeat_s, 1.0))

    # -- admin route ------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        async def fleet_status(request: Request) -> Response:
            refused = auth.require(request, "push")  # an admin route: the `push` scope
            if refused is not None:
                return Response(refused.body, refused.status, media_type="application/json")
            js = self.link.js
            if not self.link.up or js is None:
                note = self.link.note() or "fleet: broker unreachable"
                return Response(error_body("broker_down", note), 503, media_type="application/json")
            s = self.settings
            try:
                kv = await nodes_bucket(js, s.subject, s.stale_after_s)
                beats = await read_beats(kv)
            except Exception as exc:  # the broker went away mid-read
                return Response(
                    error_body("broker_down", f"fleet: {exc}"), 503, media_type="application/json"
                )
            rep = report(beats, time.time(), s.stale_after_s)
            return Response(encode_json(rep), 200, media_type="application/json")

        return [Route("/v1/admin/fleet", fleet_status, methods=["GET"])]
