"""Next-best-action webhooks: fired off the request path, once per visitor and action per window.

A decision only offers its actions to a bounded queue (a full queue counts a drop) after a cheap
per-worker check of what it offered recently. A background task claims each (action, visitor) in
the live store — the claim is a write transaction, so exactly one worker of the node wins per
window — and POSTs `{"action","visitor","t"}` with retries and exponential backoff, in a thread.
Nothing here can slow or fail a decision.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Sequence

import orjson
from cachetools import TTLCache

from rules import ActionDecision

from ..config import LiveSettings
from .store import LiveStore

log = logging.getLogger("edgeside.triggers")


class Fire:
    __slots__ = ("action", "key", "method", "t", "url")

    def __init__(self, action: str, url: str, method: str, key: str, t: float) -> None:
        self.action = action
        self.url = url
        self.method = method
        self.key = key
        self.t = t


class Triggers:
    def __init__(self, store: LiveStore, settings: LiveSettings) -> None:
        self.store = store
        self.settings = settings
        self.queue: collections.deque[Fire] = collections.deque()
        self.counts: collections.Counter[str] = collections.Counter()
        self.wakeup = asyncio.Event()
        # Bounded per-worker memory of recent offers: a returning visitor does not refill the queue.
        self._recent: TTLCache[tuple[str, str], bool] = TTLCache(
            maxsize=100_000, ttl=settings.trigger_window_s
        )
        self._hosts = frozenset(h.lower() for h in settings.webhook_hosts)
        self._allowed: dict[str, bool] = {}
        # Set by the fleet (server/fleet/shared.py): after this node's claim, the fleet's.
        self.fleet_claim: Callable[[str, str, float], Awaitable[bool]] | None = None

    def allowed(self, url: str) -> bool:
        ok = self._allowed.get(url)
        if ok is None:
            parts = urllib.parse.urlsplit(url)
            host = (parts.hostname or "").lower()
            ok = parts.scheme in ("http", "https") and ("*" in self._hosts or host in self._hosts)
            if len(self._allowed) < 10_000:
                self._allowed[url] = ok
        return ok

    def offer(self, actions: Sequence[ActionDecision], key: str, now: float) -> None:
        for action in actions:
            hook = action.webhook
            if hook is None or not self.allowed(hook.url):
                continue
            mark = (action.id, key)
            if mark in self._recent:
                continue
            self._recent[mark] = True
            if len(self.queue) >= self.settings.trigger_queue_max:
                self.counts["dropped"] += 1
                continue
            self.queue.append(Fire(action.id, hook.url, hook.method, key, now))
            self.wakeup.set()

    async def run(self) -> None:
        while True:
            if not self.queue:
                self.wakeup.clear()
                await self.wakeup.wait()
            fire = self.queue.popleft()
            try:
                await self.fire(fire)
            except Exception:  # a bad hook must not stop the others
                log.exception("trigger %s failed", fire.action)
                self.counts["failed"] += 1

    async def fire(self, fire: Fire) -> None:
        s = self.settings
        claimed = await asyncio.to_thread(
            self.store.claim, fire.action, fire.key, s.trigger_window_s, fire.t
        )
        if claimed and self.fleet_claim is not None:
            claimed = await self.fleet_claim(fire.action, fire.key, s.trigger_window_s)
        if not claimed:
            self.counts["deduplicated"] += 1
            return
        body = orjson.dumps({"action": fire.action, "visitor": fire.key, "t": fire.t})
        delay = 0.05
        for attempt in range(s.trigger_retries + 1):
            try:
                status = await asyncio.to_thread(
                    _send, fire.url, fire.method, body, s.trigger_timeout_s
                )
                if 200 <= status < 300:
                    self.counts["sent"] += 1
                    return
                log.warning("trigger %s: HTTP %d (attempt %d)", fire.action, status, attempt + 1)
            except OSError as exc:
                log.warning("trigger %s: %s (attempt %d)", fire.action, exc, attempt + 1)
            if attempt < s.trigger_retries:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        self.counts["failed"] += 1


def _send(url: str, method: str, body: bytes, timeout: float) -> int:
    request = urllib.request.Request(  # noqa: S310 - http(s) only, see `allowed`
        url, data=body, method=method, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
