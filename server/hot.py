"""The hot routes — `/v1/edge`, `/v1/decide`, `/v1/fragments/{placement}` — as plain ASGI.

Starlette's Request/Response objects cost a third of the throughput on a route this small (issue
4), so these parse the scope themselves and do only what a decision needs. Everything that can be
prepared is prepared once: decoders, encoders, header names. The GET routes sit behind
`Remembering`, which answers a request seen a moment ago from the answer memo before any parsing;
`/v1/events` lives with the live store in `server/live/api.py`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import NamedTuple
from urllib.parse import parse_qs

import msgspec

import rules

from .asgi import (
    JSON_HEADERS,
    ASGIApp,
    Headers,
    Receive,
    Refused,
    Scope,
    Send,
    decode_json,
    error_body,
    header_value,
    read_json_body,
    send_error,
    send_response,
)
from .context import MEMO_KEY_MAX_BYTES, Visitor
from .decisions import Answer, Message, Served, fallback_reason, response_messages
from .fragments import render_fragment
from .memo import AnswerMemo
from .schemas import ContentOut, DecideRequest, DecideResponse
from .state import AppState, PlacementError, split_placements
from .world import World

log = logging.getLogger("edgeside.hot")
_decode_request = msgspec.json.Decoder(DecideRequest).decode
_encode = msgspec.json.Encoder().encode
_perf = time.perf_counter
_now = time.time


def query_params(scope: Scope) -> dict[str, list[str]]:
    """The query string's parameters; percent-decoding only where there is something to decode."""
    raw: bytes = scope.get("query_string", b"")
    if not raw:
        return {}
    text = raw.decode("latin-1")
    if "%" in text or "+" in text:
        return parse_qs(text, keep_blank_values=False, max_num_fields=256)
    params: dict[str, list[str]] = {}
    for pair in text.split("&", 256):
        name, _, value = pair.partition("=")
        if value:
            params.setdefault(name, []).append(value)
    return params


def decision_headers(decision: rules.Decision, snapshot_header: bytes) -> Headers:
    """The X-Edge-* headers a proxy copies into its cache key and passes to the origin."""
    headers: Headers = [
        (b"x-edge-key", header_value(decision.key)),
        (
            b"x-edge-decision",
            header_value(";".join(f"{p.placement}={p.variant}" for p in decision.placements)),
        ),
        (b"x-edge-segments", header_value(",".join(decision.segments))),
        (b"x-edge-snapshot", snapshot_header),
        (b"cache-control", b"private, max-age=%d" % max(decision.ttl, 0)),
    ]
    reason = fallback_reason(decision)
    if reason is not None:
        headers.append((b"x-edge-fallback", header_value(reason)))
    return headers


# What a proxy gets if the edge handler itself fails: the page renders with its defaults.
_EDGE_FAILED: Headers = [
    (b"x-edge-key", b"default"),
    (b"x-edge-fallback", b"internal_error"),
    (b"cache-control", b"no-store"),
]


# A request's key in a route's answer memo (server/memo_keys.py), None if it has none.
RequestKey = Callable[[str, str, bytes, Headers], Hashable | None]
# A stranger's answer this request gets too, from (method, query, headers, now); see `Edge`.
Strangers = Callable[[str, bytes, Headers, float], "Answer | None"]


def key_of(key: RequestKey, scope: Scope) -> Hashable | None:
    return key(scope["method"], scope["path"], scope["query_string"], scope["headers"])


# A scope key the HTTP protocol sets on a request it looked up in the memo and did not find.
MEMO_MISSED = "edgeside.memo_missed"


class Remembering:
    """A GET hot route behind its answer memos: an answer already known is sent again, while
    still exact, without parsing anything — the answer to the very request answered a moment
    ago, or (given `strangers`) the answer a stranger got to the same question; every other
    request goes to `route` (the checked handler), which decides and remembers the answer."""

    def __init__(
        self,
        state: AppState,
        memo: AnswerMemo[Answer],
        key: RequestKey,
        label: str,
        status: int,
        route: ASGIApp,
        strangers: Strangers | None = None,
    ) -> None:
        self.memo = memo
        self.key = key
        self.route = route
        self.strangers = strangers
        self.service = state.service
        self.responses = state.metrics.responses
        self.response = (label, str(status))  # the memos keep only answers with this status
        self.latency = state.metrics.request_seconds.series((label,))
        self.protocol_answers = state.metrics.protocol_answers
        # Answers sent from the memos since the last scrape (of them, by the HTTP protocol):
        # counted in the metrics then.
        self.sent = 0
        self.sent_by_protocol = 0
        state.before_scrape.append(self.count_sent)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = _perf()
        # The protocol may have looked it up already (server/protocol.py).
        if MEMO_MISSED in scope:
            await self.route(scope, receive, send)
            return
        answer = self.recall(
            scope["method"], scope["path"], scope["query_string"], scope["headers"]
        )
        if answer is None:
            await self.route(scope, receive, send)
            return
        await send(answer.start)
        await send(answer.body)
        self.latency.observe(_perf() - started)

    def recall(self, method: str, path: str, query: bytes, headers: Headers) -> Answer | None:
        """An answer already known for this request, if it is still exact, counted and logged
        as sent; the caller sends it and observes its latency. Also called by the HTTP
        protocol, before any ASGI request exists (server/protocol.py). A fault here means no
        known answer: the route decides afresh (and fails open itself)."""
        try:
            return self._recall(method, path, query, headers)
        except Exception:
            log.exception("answer memo lookup failed; deciding afresh")
            return None

    def _recall(self, method: str, path: str, query: bytes, headers: Headers) -> Answer | None:
        now = _now()
        key = self.key(method, path, query, headers)
        if key is None:
            return None
        answer = self.memo.get(key, now)
        service = self.service
        if answer is not None and service.still_current(answer.served):
            service.reuse(answer.served, now)
        elif self.strangers is not None:
            answer = self.strangers(method, query, headers, now)
        else:
            return None
        if answer is not None:
            self.sent += 1
        return answer

    def count_sent(self) -> None:
        sent, self.sent = self.sent, 0
        self.responses.inc(self.response, sent)
        by_protocol, self.sent_by_protocol = self.sent_by_protocol, 0
        self.protocol_answers.inc(self.response[:1], by_protocol)


def _remember(memo: AnswerMemo[Answer], key: Hashable | None, answer: Answer, now: float) -> None:
    """Put a fresh answer, `_keepable` for its request, in its memo."""
    if key is not None and answer.served.remember:
        memo.put(key, answer, now, answer.served.expires)


def _keepable(state: AppState, scope: Scope, answer: Answer) -> bool:
    """Not an answer decided on a world already replaced, nor one to a request too large to be
    worth keeping (the memos are bounded in entries, not bytes), nor one to a request with a body:
    the protocol answers a repeat as soon as its headers are in (server/protocol.py)."""
    if answer.versions != state.holder.current.snapshot_header:
        return False
    size = 0
    for name, value in scope["headers"]:
        if name in _BODY_HEADERS:
            return False
        size += len(name) + len(value)
    return size <= MEMO_KEY_MAX_BYTES


_BODY_HEADERS = frozenset((b"content-length", b"transfer-encoding"))


class Edge:
    """`GET /v1/edge` behind `Remembering`: a request not answered a moment ago.

    What repeats across different requests is remembered too, in small bounded dicts: the parsed
    query (site and placements) by its raw bytes, and the response messages by the decision (the
    service shares decisions between visitors, see `DecisionService.serve`) and by their headers.
    """

    _MAX = 4096

    def __init__(self) -> None:
        self._queries: dict[tuple[bytes, bytes | None], tuple[str | None, tuple[str, ...]]] = {}
        self._by_decision: dict[int, tuple[rules.Decision, bytes, tuple[Message, Message]]] = {}
        self._by_headers: dict[tuple[tuple[bytes, bytes], ...], tuple[Message, Message]] = {}

    async def __call__(self, state: AppState, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._edge(state, scope, send)
        except Exception:
            log.exception("edge handler failed")
            state.metrics.fallbacks.inc(("internal_error",))
            await send_response(send, 204, _EDGE_FAILED)

    async def _edge(self, state: AppState, scope: Scope, send: Send) -> None:
        started = _perf()
        raw = scope["headers"]
        headers = dict(raw)
        now = _now()
        try:
            site, placements = self._query(state, scope, headers)
        except PlacementError as exc:
            await send_error(send, 400, "bad_placements", str(exc), "X-Placements")
            state.metrics.responses.inc(("edge", "400"))
            return
        described = state.builder.describing(raw)
        decided = _decide_from_headers(state, site, described, headers, now, placements)
        served, versions = decided.served, decided.versions
        answer = Answer(self._messages(served.decision, versions), versions, served)
        if _keepable(state, scope, answer):
            keys = state.keys
            _remember(state.edge_memo, key_of(keys.edge, scope), answer, now)
            # Not with the decision log on: its records name each visitor.
            if served.stranger and not state.decision_log.enabled:
                shape = keys.stranger(scope["method"], scope["query_string"], raw)
                if shape is not None:
                    state.stranger_memo.put(shape, (answer, decided.ctx), now, served.expires)
        state.service.emit(served, now)
        await send(answer.start)
        await send(answer.body)
        metrics = state.metrics
        metrics.responses.inc(("edge", "204"))
        metrics.request_seconds.observe(("edge",), _perf() - started)

    @staticmethod
    def recall_stranger(
        state: AppState, method: str, query: bytes, raw: Headers, now: float
    ) -> Answer | None:
        """The answer a stranger got to this very question, if this visitor gets it too: most
        visitors are strangers, and strangers asking the same question get the same answer
        (`DecisionService.welcomes` says when)."""
        shape = state.keys.stranger(method, query, raw)
        if shape is None:
            return None
        remembered = state.stranger_memo.get(shape, now)
        if remembered is None:
            return None
        answer, ctx = remembered
        service = state.service
        visitor = _ANONYMOUS
        if ctx.consent:
            visitor = state.builder.visitor_from_headers(dict(raw))
        holder = state.holder
        world = holder.acquire()
        try:
            if answer.versions != world.snapshot_header:
                return None
            if not service.welcomes(world, visitor, ctx, answer.served.decision):
                return None
        finally:
            holder.release(world)
        service.reuse(answer.served, now)
        return answer

    def _query(
        self, state: AppState, scope: Scope, headers: dict[bytes, bytes]
    ) -> tuple[str | None, tuple[str, ...]]:
        """The site and the checked placements (`X-Placements` wins over `?p=`)."""
        raw_placements = headers.get(b"x-placements")
        key = (scope["query_string"], raw_placements)
        hit = self._queries.get(key)
        if hit is not None:
            return hit
        query = query_params(scope)
        if raw_placements is not None:
            placements = split_placements(raw_placements.decode("latin-1"))
        else:
            placements = [p for value in query.get("p", []) for p in split_placements(value)]
        state.check_placements(placements)
        if len(self._queries) >= self._MAX:
            self._queries.clear()
        hit = self._queries[key] = (query.get("site", [None])[0], tuple(placements))
        return hit

    def _messages(self, decision: rules.Decision, versions: bytes) -> tuple[Message, Message]:
        """The response messages for a decision: one pair for all answers with the same headers,
        so the memo's answers share them (and a hit touches memory that is already warm)."""
        hit = self._by_decision.get(id(decision))
        # Identity first: the entry holds the decision, so its id is not reused meanwhile.
        if hit is not None and hit[0] is decision and hit[1] is versions:
            return hit[2]
        headers = decision_headers(decision, versions)
        if len(self._by_decision) >= self._MAX:
            self._by_decision.clear()
            self._by_headers.clear()
        messages = self._by_headers.setdefault(tuple(headers), response_messages(204, headers))
        self._by_decision[id(decision)] = (decision, versions, messages)
        return messages


class Decided(NamedTuple):
    versions: bytes
    served: Served
    html: str  # the first placement's fragment, when asked to render
    ctx: rules.Context


def _decide_from_headers(
    state: AppState,
    site: str | None,
    described: list[tuple[bytes, bytes]],
    headers: dict[bytes, bytes],
    now: float,
    placements: Sequence[str],
    render: bool = False,
) -> Decided:
    """Decide from what a proxy forwards; with `render`, also the first placement's fragment."""
    ctx = state.builder.context_for(described, headers, site, now)
    visitor = state.builder.visitor_from_headers(headers) if ctx.consent else _ANONYMOUS
    holder = state.holder
    world = holder.acquire()
    try:
        served = state.service.serve(world, visitor, ctx, placements)
        html = ""
        if render:
            chosen = served.decision.placements[0]
            html = render_fragment(world, chosen.placement, chosen.variant, chosen.content)
        return Decided(world.snapshot_header, served, html, ctx)
    finally:
        holder.release(world)


FRAGMENT_PREFIX = "/v1/fragments/"
_HTML = b"text/html; charset=utf-8"


async def fragment(state: AppState, scope: Scope, receive: Receive, send: Send) -> None:
    """`GET /v1/fragments/{placement}`: the chosen content as HTML, for an ESI/SSI include."""
    started = _perf()
    metrics = state.metrics
    placement = scope["path"][len(FRAGMENT_PREFIX) :]
    try:
        state.check_placements([placement])
    except PlacementError as exc:
        await send_error(send, 400, "bad_placements", str(exc), "placement")
        metrics.responses.inc(("fragment", "400"))
        return
    now = _now()
    site = query_params(scope).get("site", [None])[0]
    raw = scope["headers"]
    versions, served, html, _ = _decide_from_headers(
        state, site, state.builder.describing(raw), dict(raw), now, [placement], render=True
    )
    out = [
        (b"content-type", _HTML),
        # Includes are fetched per visitor: short-lived and never shared by a cache.
        (b"cache-control", state.fragment_cache_control),
        *(h for h in decision_headers(served.decision, versions) if h[0] != b"cache-control"),
    ]
    answer = Answer(response_messages(200, out, html.encode("utf-8")), versions, served)
    if _keepable(state, scope, answer):
        _remember(state.fragment_memo, key_of(state.keys.fragment, scope), answer, now)
    state.service.emit(served, now)
    await send(answer.start)
    await send(answer.body)
    metrics.responses.inc(("fragment", "200"))
    metrics.request_seconds.observe(("fragment",), _perf() - started)


JSONHandler = Callable[[AppState, Scope, Receive], Awaitable[tuple[int, bytes]]]


async def answer_json(
    route: str, handle: JSONHandler, state: AppState, scope: Scope, receive: Receive, send: Send
) -> None:
    """Run a JSON route's handler (a `Refused` becomes its 4xx) and send and count its answer."""
    started = _perf()
    try:
        status, body = await handle(state, scope, receive)
    except Refused as refused:
        status, body = refused.status, refused.body
    await send_response(send, status, JSON_HEADERS, body)
    metrics = state.metrics
    metrics.responses.inc((route, str(status)))
    metrics.request_seconds.observe((route,), _perf() - started)


async def decide(state: AppState, scope: Scope, receive: Receive, send: Send) -> None:
    await answer_json("decide", _decide, state, scope, receive, send)


async def _decide(state: AppState, scope: Scope, receive: Receive) -> tuple[int, bytes]:
    headers = dict(scope["headers"])
    raw = await read_json_body(scope, receive, headers, state.settings.limits.max_body_bytes)
    explain = b"explain" in scope.get("query_string", b"")
    memo = state.decide_memo
    key = None
    if memo.enabled and not explain and len(raw) <= MEMO_KEY_MAX_BYTES:
        key = (state.holder.current.snapshot_header, raw)
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
    if explain and not state.authorized(headers):
        return 401, error_body("unauthorized", "explain needs the admin bearer token")
    builder = state.builder
    now = _now()
    ctx = builder.from_body(request.context, now)
    visitor = builder.visitor_from_body(request.visitor) if ctx.consent else _ANONYMOUS
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
            memo.put(key, (body, served), now, served.expires)
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


# The visitor of a request without consent or identifiers: nothing to look up.
_ANONYMOUS = Visitor()
