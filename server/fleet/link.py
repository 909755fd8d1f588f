"""The node's connection to the broker: connect in the background, reconnect forever.

A node never waits for the broker: start-up, decisions and events go on while it is down; what
needs it (publishing, following) waits for `up`. `note()` is the readiness detail and `up` the
metric that say it is down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from ..config import FleetSettings

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext

log = logging.getLogger("edgeside.fleet")

RETRY_MAX_S = 1.0  # a broker back from an outage is found within a second


def servers_of(broker: str) -> list[str]:
    return [s for s in broker.replace(",", " ").split() if s]


async def connect_once(broker: str, timeout_s: float = 5.0) -> Client:
    """A short-lived connection for a command: fails within `timeout_s` instead of retrying."""
    import nats

    async def quiet(exc: Exception) -> None:
        """nats-py prints every failed attempt otherwise; the caller reports the outcome."""

    connecting = nats.connect(
        servers=servers_of(broker),
        connect_timeout=timeout_s,
        allow_reconnect=False,
        max_reconnect_attempts=1,
        reconnect_time_wait=0.1,
        error_cb=quiet,
    )
    return await asyncio.wait_for(connecting, timeout=timeout_s * 2)


class BrokerLink:
    def __init__(self, settings: FleetSettings, node: str) -> None:
        self.settings = settings
        self.node = node
        self.servers = servers_of(settings.broker)
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None
        self.last_error: str | None = None
        self.down_since: float | None = time.time()
        self.changed = asyncio.Event()  # set on every connect and disconnect

    @property
    def up(self) -> bool:
        nc = self.nc
        return nc is not None and nc.is_connected

    def note(self) -> str | None:
        if self.up:
            return None
        since = time.time() - (self.down_since or time.time())
        why = f": {self.last_error}" if self.last_error else ""
        return f"fleet: broker unreachable for {since:.0f} s{why}; serving from local state"

    async def wait_up(self) -> None:
        while not self.up:
            self.changed.clear()
            await self.changed.wait()

    def _flip(self, up: bool) -> None:
        if up:
            self.down_since = None
            self.last_error = None
        elif self.down_since is None:
            self.down_since = time.time()
        self.changed.set()

    async def run(self) -> None:
        """Connect, retrying with a capped backoff until it works; then nats-py reconnects by
        itself (forever) and the callbacks below keep `up` and `note()` true."""
        import nats

        async def disconnected() -> None:
            self._flip(False)

        async def reconnected() -> None:
            self._flip(True)

        async def error(exc: Exception) -> None:
            self.last_error = str(exc) or type(exc).__name__

        delay = 0.2
        while self.nc is None:
            try:
                self.nc = await nats.connect(
                    servers=self.servers,
                    name=f"edgeside {self.node}",
                    connect_timeout=self.settings.connect_timeout_s,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.25,
                    ping_interval=2,
                    max_outstanding_pings=2,
                    disconnected_cb=disconnected,
                    reconnected_cb=reconnected,
                    error_cb=error,
                )
            except Exception as exc:  # unreachable, refused, bad URL: retried, never fatal
                self.last_error = str(exc) or type(exc).__name__
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX_S, delay * 2)
        self.js = self.nc.jetstream(timeout=self.settings.connect_timeout_s)
        log.warning("fleet: node %s connected to %s", self.node, self.nc.connected_url)
        self._flip(True)

    async def close(self) -> None:
        nc, self.nc, self.js = self.nc, None, None
        if nc is not None:
            try:
                await asyncio.wait_for(nc.close(), timeout=2.0)
            except Exception as exc:  # closing a dead connection: nothing left to do
                log.debug("fleet: close: %s", exc)
