"""`POST /v1/events` as plain ASGI: decode, check each event, queue the accepted ones, answer 202.

Nothing here touches LMDB: the answer costs a decode and a few comparisons per event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Protocol

import msgspec

import rules

from .. import auth
from ..asgi import (
    Receive,
    Scope,
    Send,
    answer_json,
    decode_json,
    error_body,
    read_json_body,
)
from ..config import Settings
from ..metrics import Metrics
from ..schemas import VisitorIn
from ..visitor import Visitor
from .events import EventBatch, EventsAnswer, Ingest, NotStored, Pending, Rejection
from .store import LiveStore


class Describer(Protocol):
    """How a request's headers and an event's visitor are read (server/decide/context.py
    `ContextBuilder` is one)."""

    def from_headers(
        self, headers: Mapping[bytes, bytes], site: str | None, now: float
    ) -> rules.Context: ...

    def visitor_from_body(self, body: VisitorIn) -> Visitor: ...

    def visitor_from_headers(self, headers: Mapping[bytes, bytes]) -> Visitor: ...

    def names_others(self, body: VisitorIn) -> bool: ...


class Worker(Protocol):
    """What this route needs of the worker it runs in (server/state.py `AppState` is one): a
    protocol, so the live room names nothing above it."""

    settings: Settings
    metrics: Metrics
    ingest: Ingest

    @property
    def builder(self) -> Describer: ...

    @property
    def live(self) -> LiveStore | None: ...


_decode_batch = msgspec.json.Decoder(EventBatch).decode
_encode = msgspec.json.Encoder().encode


class RejectedBody(msgspec.Struct):
    """A batch of which nothing was accepted: the API's error shape plus every event's reason."""

    error: dict[str, str | None]
    accepted: int
    rejected: int
    errors: list[Rejection]


async def events(state: Worker, scope: Scope, receive: Receive, send: Send) -> None:
    await answer_json("events", _events, state, state.metrics, scope, receive, send)


async def _events(state: Worker, scope: Scope, receive: Receive) -> tuple[int, bytes]:
    s = state.settings.live
    headers = dict(scope["headers"])
    raw = await read_json_body(scope, receive, headers, s.max_body_bytes)
    batch = decode_json(_decode_batch, raw)
    if not batch.events:
        return 422, error_body("empty_batch", "send at least one event", "$.events")
    if len(batch.events) > s.max_events:
        return 413, error_body(
            "too_many_events",
            f"{len(batch.events)} events in one batch; at most {s.max_events}",
            "$.events",
        )
    if not s.enabled or state.live is None:
        return 503, error_body("live_unavailable", "the live store is not available on this node")
    now = time.time()
    builder = state.builder
    ctx = builder.from_headers(headers, None, now)
    ingest = state.ingest
    errors: list[Rejection] = []
    accepted = 0
    not_stored: list[NotStored] = []
    waiting: list[tuple[int, asyncio.Future[bool]]] = []
    trusted: bool | None = None  # the caller's `decide` scope, looked up when first needed
    own: Visitor | None = None  # the visitor the request's own cookie names
    for i, event in enumerate(batch.events):
        visitor = builder.visitor_from_body(event.visitor)
        problem = ingest.check(i, event, visitor, now)
        if problem is not None:
            errors.append(problem)
            continue
        # Identity by trust level (SPEC §6): from a browser, an event names its own cookie; any
        # other identifier — and a consent grant for anyone but the caller's own cookie — needs
        # a server-to-server caller with the `decide` scope (issue 14, defect 5: a stranger
        # re-enabled Alice's personalisation by naming her customer_id).
        others = builder.names_others(event.visitor)
        grant = event.type == "consent" and bool(event.value)
        if others or grant:
            if own is None:
                own = builder.visitor_from_headers(headers)
            if others or visitor.ids != own.ids:
                if trusted is None:
                    trusted = auth.require(scope, "decide") is None
                if not trusted:
                    errors.append(
                        Rejection(
                            i,
                            "forbidden",
                            "naming a visitor by anything but the caller's own first-party "
                            "cookie, or granting consent for another, needs a token with the "
                            "`decide` scope",
                            f"$.events[{i}].visitor",
                        )
                    )
                    continue
        ts = event.ts if event.ts is not None else now
        waiter = ingest.put(Pending(event, visitor, ts, ctx.geo.country, ctx.consent))
        if waiter is not None:
            waiting.append((i, waiter))
        elif not ctx.consent and event.type != "consent":
            not_stored.append(NotStored(i, "no_consent"))  # what the drain would skip
        accepted += 1
    metrics = state.metrics
    if accepted:
        metrics.events.inc(("accepted",), accepted)
        ingest.wakeup.set()
    for e in errors:
        metrics.events.inc((e.code,))
    if waiting:
        # A withdrawal of consent is written before anything else, at once: wait for it, so the
        # answer says whether it was stored (issue 14: a 202 for a lost withdrawal misled).
        await asyncio.wait([w for _, w in waiting], timeout=s.consent_wait_s)
        for i, w in waiting:
            if not w.done():
                not_stored.append(NotStored(i, "queued"))
            elif not w.result():
                not_stored.append(NotStored(i, "store_full"))
        not_stored.sort(key=lambda n: n.index)
    if accepted or not errors:
        dropped = sum(1 for n in not_stored if n.reason != "queued")
        return 202, _encode(EventsAnswer(accepted, len(errors), errors, dropped, not_stored))
    if all(e.code == "forbidden" for e in errors):
        status = 403
    elif all(e.code in ("flood", "overloaded") for e in errors):
        status = 429
    else:
        status = 422
    first = errors[0]
    return status, _encode(
        RejectedBody(
            {"code": first.code, "message": first.message, "field": first.field},
            0,
            len(errors),
            errors,
        )
    )
