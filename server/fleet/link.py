"""The node's connection to the broker: connect in the background, reconnect forever.

A node never waits for the broker: start-up, decisions and events go on while it is down; what
needs it (publishing, following) waits for `up`. `note()` is the readiness detail and `up` the
metric that say it is down.

Credentials, like every secret of a node, come from its environment only (never the config file,
the command line or a log line): `EDGESIDE_FLEET_BROKER_USER` and `…_PASSWORD`, or
`EDGESIDE_FLEET_BROKER_TOKEN` (or `…_TOKEN_FILE`, a file holding it). They win over credentials
written in the broker URL (`nats://user:pw@host`), which keeps working. Broker addresses are shown
without their credentials wherever they are logged or reported.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import FleetSettings
from ..lifecycle.pull import redact

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext

log = logging.getLogger("edgeside.fleet")

RETRY_MAX_S = 1.0  # a broker back from an outage is found within a second
# Refused credentials do not fix themselves within a second: ask again now and then (a rotation
# on the broker's side is picked up), without a log line and a handshake every second.
AUTH_RETRY_MAX_S = 10.0

# The names of the variables, not secrets.
USER_ENV = "EDGESIDE_FLEET_BROKER_USER"
PASSWORD_ENV = "EDGESIDE_FLEET_BROKER_PASSWORD"  # noqa: S105
TOKEN_ENV = "EDGESIDE_FLEET_BROKER_TOKEN"  # noqa: S105
TOKEN_FILE_ENV = "EDGESIDE_FLEET_BROKER_TOKEN_FILE"  # noqa: S105
SECRET_MAX_BYTES = 4096


class BrokerAuthError(ValueError):
    """Broker credentials given in a way that cannot work; the message names the variables."""


@dataclass(frozen=True, repr=False)
class BrokerAuth:
    user: str = ""
    password: str = ""
    token: str = ""

    def __repr__(self) -> str:
        return "BrokerAuth(<redacted>)"

    @property
    def given(self) -> str:
        """Which credentials, for messages: never their values."""
        if self.user:
            return f"user {self.user!r} and {PASSWORD_ENV}"
        return f"{TOKEN_ENV}" if self.token else "the broker URL's credentials, if any"

    def options(self) -> dict[str, str]:
        """Keyword arguments of `nats.connect` (nats-py prefers them over a URL's userinfo)."""
        if self.user:
            return {"user": self.user, "password": self.password}
        return {"token": self.token} if self.token else {}


def broker_auth(environ: Mapping[str, str] | None = None) -> BrokerAuth:
    env = os.environ if environ is None else environ
    user, password = env.get(USER_ENV, ""), env.get(PASSWORD_ENV, "")
    token, token_file = env.get(TOKEN_ENV, ""), env.get(TOKEN_FILE_ENV, "")
    if token_file:
        if token:
            raise BrokerAuthError(f"set {TOKEN_ENV} or {TOKEN_FILE_ENV}, not both")
        try:
            with open(token_file, "rb") as f:
                raw = f.read(SECRET_MAX_BYTES + 1)
        except OSError as exc:
            why = f"{TOKEN_FILE_ENV}: cannot read {token_file}: {exc.strerror}"
            raise BrokerAuthError(why) from None
        if len(raw) > SECRET_MAX_BYTES:
            why = f"{TOKEN_FILE_ENV}: {token_file} is over {SECRET_MAX_BYTES} bytes"
            raise BrokerAuthError(why)
        try:
            token = raw.decode().strip()
        except UnicodeDecodeError:
            raise BrokerAuthError(f"{TOKEN_FILE_ENV}: {token_file} is not UTF-8 text") from None
        if not token:
            raise BrokerAuthError(f"{TOKEN_FILE_ENV}: {token_file} is empty")
    if bool(user) != bool(password):
        raise BrokerAuthError(f"{USER_ENV} and {PASSWORD_ENV} go together; one is not set")
    if user and token:
        raise BrokerAuthError(f"give a user and password or a token ({TOKEN_ENV}), not both")
    return BrokerAuth(user, password, token)


def servers_of(broker: str) -> list[str]:
    return [s for s in broker.replace(",", " ").split() if s]


def shown(broker: str) -> str:
    """The broker's address(es) fit for a log line or a report: no credentials."""
    return ",".join(redact(s) for s in servers_of(broker))


def explain(exc: BaseException, auth: BrokerAuth) -> str:
    """What a failed connection says to an operator; refused credentials say which were used."""
    from nats.errors import AuthorizationError

    text = str(exc) or type(exc).__name__
    if isinstance(exc, AuthorizationError) or "authorization" in text.lower():
        return f"the broker refused this node's credentials ({auth.given}): {text}"
    return text


async def connect_once(
    broker: str, timeout_s: float = 5.0, auth: BrokerAuth | None = None
) -> Client:
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
        **(auth or broker_auth()).options(),
    )
    return await asyncio.wait_for(connecting, timeout=timeout_s * 2)


class BrokerLink:
    def __init__(
        self, settings: FleetSettings, node: str, environ: Mapping[str, str] | None = None
    ) -> None:
        self.settings = settings
        self.node = node
        self.servers = servers_of(settings.broker)
        self.auth: BrokerAuth | None = None
        self.auth_error: str | None = None
        try:
            self.auth = broker_auth(environ)
        except BrokerAuthError as exc:  # the node serves alone, and says why
            self.auth_error = f"broker credentials: {exc}"
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

        auth = self.auth
        if auth is None:  # credentials that cannot work: not even tried
            self.last_error = self.auth_error
            return

        async def error(exc: Exception) -> None:
            self.last_error = explain(exc, auth)

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
                    **auth.options(),
                )
            except Exception as exc:  # unreachable, refused, bad URL: retried, never fatal
                self.last_error = explain(exc, auth)
                refused = self.last_error.startswith("the broker refused")
                await asyncio.sleep(delay)
                delay = min(AUTH_RETRY_MAX_S if refused else RETRY_MAX_S, delay * 2)
        self.js = self.nc.jetstream(timeout=self.settings.connect_timeout_s)
        url = self.nc.connected_url
        where = redact(url.geturl()) if url else "?"
        log.warning("fleet: node %s connected to %s", self.node, where)
        self._flip(True)

    async def close(self) -> None:
        nc, self.nc, self.js = self.nc, None, None
        if nc is not None:
            try:
                await asyncio.wait_for(nc.close(), timeout=2.0)
            except Exception as exc:  # closing a dead connection: nothing left to do
                log.debug("fleet: close: %s", exc)
