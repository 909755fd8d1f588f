"""`POST /v1/decide`: JSON decisions for apps, e-mail and call-centre tools (SPEC §6).

Plain ASGI like the edge routes, for the same reason (server/edge/routes.py): the body is decoded
by a prepared msgspec decoder, and the answer encoded by a prepared encoder.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import msgspec

import rules

from .. import auth
from ..asgi import (
    Receive,
    Refused,
    Scope,
    Send,
    answer_json,
    check_json_request,
    count_answer,
    decode_json,
    error_body,
    query_params,
    read_json_body,
)
from ..config import Settings
from ..memo import ENTRY_BYTES, AnswerMemo
from ..metrics import Metrics
from ..schemas import ContentOut, DecideRequest, DecideResponse
from .context import ANONYMOUS, MEMO_KEY_MAX_BYTES, ContextBuilder, PlacementError
from .service import DecisionService, Served, fallback_reason
from .world import World, WorldHolder

_decode_request = msgspec.json.Decoder(DecideRequest).decode
_encode = msgspec.json.Encoder().encode
_now = time.time


class Worker(Protocol):
    """What this route needs of the worker it runs in (server/state.py `AppState` is one): a
    protocol, so the decide room names nothing above it."""

    settings: Settings
    metrics: Metrics
    holder: WorldHolder
    service: DecisionService
    builder: ContextBuilder

    def add_memos(self, memos: dict[str, AnswerMemo[Any]]) -> None: ...

    def check_placements(self, names: list[str]) -> None: ...


class Decide:
    """`POST /v1/decide`, with a memo of whole answers by request body: a caller asking the very
    same question a moment ago, on the same snapshots, gets the same bytes."""

    def __init__(self, state: Worker) -> None:
        settings = state.settings
        self.memo: AnswerMemo[tuple[bytes, Served]] = AnswerMemo(
            settings.memo_ttl_s, settings.memo_max_entries, settings.memo_max_bytes
        )
        state.add_memos({"decide": self.memo})

    async def __call__(self, state: Worker, scope: Scope, receive: Receive, send: Send) -> None:
        await answer_json("decide", self._decide, state, state.metrics, scope, receive, send)

    async def _decide(self, state: Worker, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        headers = dict(scope["headers"])
        raw = await read_json_body(scope, receive, headers, state.settings.limits.max_body_bytes)
        return _answer(state, self.memo, scope, headers, raw)

    def respond(self, state: Worker, scope: Scope, raw: bytes) -> tuple[int, bytes]:
        """The answer to a request whose whole body (`raw`, within the body limit) is in, as
        `__call__` sends it, counted as it counts it — with no `await`: the HTTP protocol
        calls this once the body has arrived, before any ASGI request exists
        (server/edge/protocol.py)."""
        started = time.perf_counter()
        headers = dict(scope["headers"])
        try:
            check_json_request(scope, headers, state.settings.limits.max_body_bytes)
            status, body = _answer(state, self.memo, scope, headers, raw)
        except Refused as refused:
            status, body = refused.status, refused.body
        count_answer(state.metrics, "decide", status, started)
        return status, body


def _answer(
    state: Worker,
    memo: AnswerMemo[tuple[bytes, Served]],
    scope: Scope,
    headers: dict[bytes, bytes],
    raw: bytes,
) -> tuple[int, bytes]:
    """The status and body answering the body `raw`; raises `Refused` for a 4xx."""
    explain = b"explain" in scope.get("query_string", b"")
    key = None
    if memo.enabled and not explain and len(raw) <= MEMO_KEY_MAX_BYTES:
        # The caller's credential is part of the question: an answer naming a customer is
        # remembered for a caller allowed to ask it, never handed to one who is not.
        key = (state.holder.current.snapshot_header, headers.get(b"authorization"), raw)
        now = _now()
        hit = memo.get(key, now)
        if hit is not None and state.service.still_current(hit[1]):
            state.service.reuse(hit[1], now)
            return 200, hit[0]
    request = decode_json(_decode_request, raw)
    try:
        state.check_placements(request.placements)
    except PlacementError as exc:
        field = "$.placements" if exc.index is None else f"$.placements[{exc.index}]"
        return 422, error_body("bad_placements", str(exc), field)
    explain = "explain" in query_params(scope)
    if explain and (refused := auth.require(scope, "explain")) is not None:
        return refused.status, refused.body
    builder = state.builder
    if (
        builder.names_others(request.visitor)
        and (refused := auth.require(scope, "decide")) is not None
    ):
        # Identity by trust level (SPEC §6): a browser may name itself by its cookie only;
        # `customer_id`, `email_sha256` or a canonical id are for server-to-server callers.
        return refused.status, refused.body
    now = _now()
    ctx = builder.from_body(request.context, now)
    visitor = builder.visitor_from_body(request.visitor) if ctx.consent else ANONYMOUS
    holder = state.holder
    world = holder.acquire()
    try:
        engine = world.engine
        if engine is not None:
            for i, name in enumerate(request.placements):
                if not engine.has_placement(ctx.site, name):
                    return 422, error_body(
                        "unknown_placement",
                        f"placement {name!r} is not defined for site {ctx.site!r}",
                        f"$.placements[{i}]",
                    )
        served = state.service.serve(world, visitor, ctx, request.placements, explain=explain)
        state.service.emit(served, _now())  # ctx.now may be a requested "as of" time
        decision = served.decision
        response = DecideResponse(
            placements=decision.placements,
            segments=decision.segments,
            key=decision.key,
            snapshots=world.versions,
            ttl=decision.ttl,
            actions=decision.actions,
            fallback=fallback_reason(decision),
            trace=decision.trace,
        )
        if request.render and world.content is not None:
            response.items = _render_items(world, decision)
        body = _encode(response)
        if key is not None and key[0] == state.holder.current.snapshot_header:
            # The entry owns its key's body and its answer's bytes.
            memo.put(key, (body, served), now, served.expires, ENTRY_BYTES + len(raw) + len(body))
        return 200, body
    finally:
        holder.release(world)


def _render_items(world: World, decision: rules.Decision) -> dict[str, ContentOut]:
    content = world.content
    items: dict[str, ContentOut] = {}
    if content is None:
        return items
    for placement in decision.placements:
        for cid in placement.content:
            item = content.get(cid)
            if item is not None and cid not in items:
                items[cid] = ContentOut(
                    id=item.id,
                    type=item.type,
                    title=item.title,
                    locale=item.locale,
                    tags=item.tags,
                    attributes=item.attributes,
                    body=item.body,
                )
    return items
