"""`POST /v1/events`: validate a batch on the request, apply it off the request path.

The handler only decodes, checks each event and appends the accepted ones to a bounded queue; a
background task drains the queue every `flush_interval_s`, resolves visitors to their live keys
and applies the batch to the store in one LMDB write transaction, in a thread.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable

import msgspec
from cachetools import TTLCache

from ..config import LiveSettings
from ..schemas import VisitorIn
from ..visitor import Visitor
from .store import Change, LiveStore

log = logging.getLogger("edgeside.events")

EVENT_TYPES = frozenset({"view", "click", "add_to_cart", "purchase", "consent"})
MAX_FIELD_CHARS = 256


class EventIn(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    type: str
    visitor: VisitorIn = msgspec.field(default_factory=VisitorIn)
    content_id: str | None = None
    category: str | None = None
    placement: str | None = None
    variant: str | None = None
    experiment: str | None = None
    arm: str | None = None
    # Money for purchases; for `consent`, true/1 grants and false/0 withdraws.
    value: bool | float | None = None
    # Epoch seconds; the server's clock when absent.
    ts: float | None = None


class EventBatch(msgspec.Struct, forbid_unknown_fields=True):
    events: list[EventIn]


class Rejection(msgspec.Struct):
    index: int
    code: str
    message: str
    field: str | None = None


class NotStored(msgspec.Struct):
    """An accepted event that the live store did not (or not yet) keep, and why:

    - ``no_consent``: the request carries no consent to personalise, so nothing about the
      visitor is stored (only consent changes are);
    - ``store_full``: a withdrawal of consent found no room even after eviction;
    - ``queued``: a withdrawal still waiting to be written when the answer was sent (it is
      written first, before any ordinary event; not counted in ``dropped``).
    """

    index: int
    reason: str


class EventsAnswer(msgspec.Struct):
    accepted: int
    rejected: int
    errors: list[Rejection]
    # Accepted events known not to be stored (``no_consent``, ``store_full``): the fields are
    # new in issue 14 and only added, so earlier clients read the answer as before.
    dropped: int = 0
    not_stored: list[NotStored] = msgspec.field(default_factory=list)


class Pending(msgspec.Struct, array_like=True):
    """An accepted event waiting for the drain task."""

    event: EventIn
    visitor: Visitor | None
    ts: float
    country: str | None
    consent: bool


def _printable(value: str) -> bool:
    return 0 < len(value) <= MAX_FIELD_CHARS and value.isprintable()


def live_key(profile_id: str | None, visitor: Visitor) -> str | None:
    """The live store key of a visitor: the person where known, else the (cookie) identifier.

    Decisions and events resolve through this one function, so both land on the same entry.
    """
    if profile_id is not None:
        return "p:" + profile_id
    if visitor.canonical is not None:
        return "p:" + visitor.canonical
    ids = visitor.ids
    if not ids:
        return None
    kind = "cookie" if "cookie" in ids else min(ids)
    return f"{kind}:{ids[kind]}"


Reason = tuple[str, str, str | None]


class Ingest:
    """One worker's event queue and flood counters."""

    def __init__(self, settings: LiveSettings) -> None:
        self.settings = settings
        self.queue: collections.deque[Pending] = collections.deque()
        # Withdrawals of consent: their own queue, taken before any other event, so a flood of
        # ordinary events never delays (or, with the store's reserved room, drops) one.
        self.urgent: collections.deque[Pending] = collections.deque()
        # A withdrawal's future, keyed by the pending event's id while it is queued: set to
        # whether it was stored, for the request that sent it (server/live/api.py).
        self.waiters: dict[int, asyncio.Future[bool]] = {}
        # Bounded: at most this many visitors tracked per worker; older ones are forgotten.
        self._flood: TTLCache[str, int] = TTLCache(maxsize=100_000, ttl=settings.flood_window_s)
        self.dropped = 0
        self.wakeup = asyncio.Event()

    def check(self, index: int, event: EventIn, visitor: Visitor, now: float) -> Rejection | None:
        s = self.settings
        where = f"$.events[{index}]"
        if event.type not in EVENT_TYPES:
            return Rejection(
                index,
                "unknown_type",
                f"unknown event type {event.type!r}; one of {', '.join(sorted(EVENT_TYPES))}",
                where + ".type",
            )
        if visitor.anonymous:
            return Rejection(
                index, "no_visitor", "an event needs visitor.id or visitor.ids", where + ".visitor"
            )
        if event.ts is not None:
            if event.ts > now + s.max_future_s:
                return Rejection(
                    index,
                    "ts_in_future",
                    f"ts is more than {s.max_future_s:g} s ahead of the server's clock",
                    where + ".ts",
                )
            if event.ts < now - s.max_past_s:
                return Rejection(
                    index,
                    "ts_too_old",
                    f"ts is more than {s.max_past_s:g} s in the past",
                    where + ".ts",
                )
        for name in ("content_id", "category", "placement", "variant", "experiment", "arm"):
            value = getattr(event, name)
            if value is not None and not _printable(value):
                return Rejection(
                    index,
                    "bad_value",
                    f"{name} must be 1-{MAX_FIELD_CHARS} printable characters",
                    f"{where}.{name}",
                )
        if event.type == "consent" and event.value not in (True, False, 0, 1):
            return Rejection(
                index, "bad_value", "a consent event needs value true or false", where + ".value"
            )
        key = live_key(None, visitor) or ""
        seen = self._flood.get(key, 0)
        if seen >= s.flood_events:
            return Rejection(
                index,
                "flood",
                f"more than {s.flood_events} events from this visitor in "
                f"{s.flood_window_s:g} s; slow down",
                where + ".visitor",
            )
        self._flood[key] = seen + 1
        queue = self.urgent if withdrawal(event) else self.queue
        if len(queue) >= s.queue_max:
            self.dropped += 1
            return Rejection(index, "overloaded", "the event queue is full; retry later", None)
        return None

    def put(self, pending: Pending) -> asyncio.Future[bool] | None:
        """Queue an accepted event; for a withdrawal, a future of whether it was stored."""
        if not withdrawal(pending.event):
            self.queue.append(pending)
            return None
        self.urgent.append(pending)
        try:
            waiter = asyncio.get_running_loop().create_future()
        except RuntimeError:  # queued outside a loop (tests): nobody waits
            return None
        self.waiters[id(pending)] = waiter
        return waiter

    def pending(self) -> bool:
        return bool(self.queue or self.urgent)

    def take(self, limit: int) -> list[Pending]:
        """Up to `limit` queued events, every queued withdrawal first."""
        out: list[Pending] = []
        for queue in (self.urgent, self.queue):
            while queue and len(out) < limit:
                out.append(queue.popleft())
        return out

    def settle(self, pending: Pending, stored: bool) -> None:
        waiter = self.waiters.pop(id(pending), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(stored)


def withdrawal(event: EventIn) -> bool:
    return event.type == "consent" and event.value in (False, 0)


def to_change(p: Pending, key: str) -> Change:
    e = p.event
    consent: bool | None = None
    if e.type == "consent":
        consent = bool(e.value)
    return Change(
        key=key,
        type=e.type,
        ts=p.ts,
        content_id=e.content_id,
        category=e.category,
        experiment=e.experiment,
        arm=e.arm,
        consent=consent,
    )


async def drain_forever(
    ingest: Ingest,
    store: LiveStore,
    resolve: Callable[[Visitor], str | None],
    on_applied: Callable[[list[tuple[Pending, str | None]]], None],
    count: Callable[[str, float], None],
) -> None:
    """Apply queued events every `flush_interval_s` (withdrawals at once), within the store's
    byte budget (`LiveStore.write`); what could not be stored is counted as dropped."""
    interval = ingest.settings.flush_interval_s
    while True:
        if not ingest.pending():
            ingest.wakeup.clear()
            try:
                await asyncio.wait_for(ingest.wakeup.wait(), timeout=1.0)
            except TimeoutError:
                continue
            if not ingest.urgent:
                # Let a burst gather for one interval: one write transaction per batch, not
                # per event. A withdrawal does not wait: its sender waits for the answer.
                await asyncio.sleep(interval)
        batch = ingest.take(5000)
        resolved: list[tuple[Pending, str | None]] = []
        changes: list[Change] = []
        owners: list[int] = []  # the batch index of each change
        for i, p in enumerate(batch):
            key = resolve(p.visitor) if p.visitor is not None else None
            resolved.append((p, key))
            # Without consent nothing is stored about the visitor, except the consent change.
            if key is not None and (p.consent or p.event.type == "consent"):
                changes.append(to_change(p, key))
                owners.append(i)
        stored = [False] * len(batch)
        if changes:
            try:
                written = await asyncio.to_thread(store.write, changes, time.time())
            except Exception as exc:  # a disk error: counted drops, never failed requests
                log.error("live store write failed, %d events dropped: %s", len(changes), exc)
                count("dropped", len(changes))
            else:
                count("applied", written.applied)
                if written.evicted:
                    count("evicted", written.evicted)
                if written.evicted_withdrawn:
                    count("evicted_withdrawn", written.evicted_withdrawn)
                if written.lost:
                    log.error(
                        "live store full even after eviction: %d events dropped", len(written.lost)
                    )
                    count("dropped", len(written.lost))
                lost = set(written.lost)
                for c, i in enumerate(owners):
                    stored[i] = c not in lost
        for p, ok in zip(batch, stored, strict=True):
            ingest.settle(p, ok)
        on_applied(resolved)
