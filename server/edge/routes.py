"""The hot GET routes — `/v1/edge` and `/v1/fragments/{placement}` — as plain ASGI.

Starlette's Request/Response objects cost a third of the throughput on a route this small (issue
4), so these parse the scope themselves and do only what a decision needs. Everything that can be
prepared is prepared once: decoders, encoders, header names. Both sit behind `Remembering`
(server/edge/remembering.py), which answers a request seen a moment ago from the answer memo
before any parsing; a repeat may not even reach them (server/edge/protocol.py).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Hashable, Sequence
from typing import NamedTuple, cast

import rules

from ..asgi import (
    ASGIApp,
    Headers,
    Receive,
    Scope,
    Send,
    header_value,
    query_params,
    send_error,
    send_response,
)
from ..decide.context import ANONYMOUS, MEMO_KEY_MAX_BYTES, PlacementError, split_placements
from ..decide.service import Served, fallback_reason
from ..memo import ENTRY_BYTES, AnswerMemo
from ..state import AppState
from .answers import Answer, EdgeMemos, Message, response_messages
from .fragments import render_fragment
from .remembering import Remembering

log = logging.getLogger("edgeside.edge")
_perf = time.perf_counter
_now = time.time


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


def _remember(
    memo: AnswerMemo[Answer], key: Hashable | None, answer: Answer, now: float, size: int
) -> None:
    """Put a fresh answer, `_keep_size` for its request, in its memo."""
    if key is not None and answer.served.remember:
        memo.put(key, answer, now, answer.served.expires, size)


def _keep_size(state: AppState, raw: Headers, answer: Answer) -> int | None:
    """The bytes an answer's memo entry holds (its key: at most the request's headers; the
    answer's own objects), or None if it is not kept: an answer decided on a world already
    replaced, one to a request too large to be worth keeping, or one to a request with a body
    (the protocol answers a repeat as soon as its headers are in: server/edge/protocol.py)."""
    if answer.versions != state.holder.current.snapshot_header:
        return None
    size = 0
    for name, value in raw:
        if name in _BODY_HEADERS:
            return None
        size += len(name) + len(value)
    return size + ENTRY_BYTES if size <= MEMO_KEY_MAX_BYTES else None


_BODY_HEADERS = frozenset((b"content-length", b"transfer-encoding"))


class Edge:
    """`GET /v1/edge` behind `Remembering`: a request not answered a moment ago.

    What repeats across different requests is remembered too, in small bounded dicts: the parsed
    query (site and placements) by its raw bytes, and the response messages by the decision (the
    service shares decisions between visitors, see `DecisionService.serve`) and by what their
    headers are made of.
    """

    _MAX = 4096

    def __init__(self, memos: EdgeMemos) -> None:
        self.memos = memos
        self._queries: dict[tuple[bytes, bytes | None], tuple[str | None, tuple[str, ...]]] = {}
        self._by_decision: dict[int, tuple[rules.Decision, bytes, tuple[Message, Message]]] = {}
        self._by_headers: dict[tuple[object, ...], tuple[Message, Message]] = {}

    async def __call__(self, state: AppState, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._edge(state, scope, send)
        except Exception:
            log.exception("edge handler failed")
            state.metrics.fallbacks.inc(("internal_error",))
            await send_response(send, 204, _EDGE_FAILED)

    async def _edge(self, state: AppState, scope: Scope, send: Send) -> None:
        started = _perf()
        try:
            answer = self.decide(
                state, scope["method"], scope["path"], scope["query_string"], scope["headers"]
            )
        except PlacementError as exc:
            await send_error(send, 400, "bad_placements", str(exc), "X-Placements")
            state.metrics.responses.inc(("edge", "400"))
            return
        await send(answer.start)
        await send(answer.body)
        state.metrics.request_seconds.observe(("edge",), _perf() - started)

    def decide(self, state: AppState, method: str, path: str, query: bytes, raw: Headers) -> Answer:
        """Decide a request no memo answered, remember the answer, count it; the caller sends it
        and observes its latency. No `await`: the HTTP protocol calls this too, before any ASGI
        request exists (server/edge/protocol.py). Raises `PlacementError` (a 400, the route's)."""
        headers = dict(raw)
        now = _now()
        site, placements = self._query(state, query, headers)
        decided = _decide_from_headers(state, site, headers, now, placements)
        served, versions = decided.served, decided.versions
        answer = Answer(self._messages(served.decision, versions), versions, served)
        memos = self.memos
        # (A memo turned off keeps nothing: no key or size to make for it.)
        size = _keep_size(state, raw, answer) if memos.edge.enabled else None
        if size is not None:
            _remember(memos.edge, memos.keys.edge(method, path, query, raw), answer, now, size)
        state.service.emit(served, now)
        state.metrics.responses.inc(("edge", "204"))
        return answer

    def _query(
        self, state: AppState, query_string: bytes, headers: dict[bytes, bytes]
    ) -> tuple[str | None, tuple[str, ...]]:
        """The site and the checked placements (`X-Placements` wins over `?p=`)."""
        raw_placements = headers.get(b"x-placements")
        key = (query_string, raw_placements)
        hit = self._queries.get(key)
        if hit is not None:
            return hit
        query = query_params({"query_string": query_string})
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
        # Different decisions (each visitor's own) often make the same headers: found by what
        # the headers are made of, exactly (`decision_headers` reads no more), before making them.
        made_of = (
            versions,
            decision.key,
            decision.ttl,
            decision.unknown_site,
            tuple([(p.placement, p.variant, p.fallback) for p in decision.placements]),
            tuple(decision.segments),
        )
        messages = self._by_headers.get(made_of)
        if messages is None:
            messages = response_messages(204, decision_headers(decision, versions))
            if len(self._by_headers) >= self._MAX:
                self._by_headers.clear()
            self._by_headers[made_of] = messages
        if len(self._by_decision) >= self._MAX:
            self._by_decision.clear()
        self._by_decision[id(decision)] = (decision, versions, messages)
        return messages


class Decided(NamedTuple):
    versions: bytes
    served: Served
    html: str  # the first placement's fragment, when asked to render


def _decide_from_headers(
    state: AppState,
    site: str | None,
    headers: dict[bytes, bytes],
    now: float,
    placements: Sequence[str],
    render: bool = False,
) -> Decided:
    """Decide from what a proxy forwards; with `render`, also the first placement's fragment."""
    ctx = state.builder.context_for(headers, site, now)
    visitor = state.builder.visitor_from_headers(headers) if ctx.consent else ANONYMOUS
    holder = state.holder
    world = holder.acquire()
    try:
        served = state.service.serve(world, visitor, ctx, placements)
        html = ""
        if render:
            chosen = served.decision.placements[0]
            html = render_fragment(world, chosen.placement, chosen.variant, chosen.content)
        return Decided(world.snapshot_header, served, html)
    finally:
        holder.release(world)


FRAGMENT_PREFIX = "/v1/fragments/"
_HTML = b"text/html; charset=utf-8"


class Fragment:
    """`GET /v1/fragments/{placement}` behind `Remembering`: the chosen content as HTML, for an
    ESI/SSI include."""

    def __init__(self, memos: EdgeMemos, max_age_s: int) -> None:
        self.memos = memos
        # Includes are fetched per visitor: short-lived and never shared by a cache.
        self.cache_control = b"private, max-age=%d" % max_age_s

    async def __call__(self, state: AppState, scope: Scope, receive: Receive, send: Send) -> None:
        await _fragment(state, self, scope, send)

    def decide(self, state: AppState, method: str, path: str, query: bytes, raw: Headers) -> Answer:
        return _fragment_answer(state, self, method, path, query, raw)


async def _fragment(state: AppState, route: Fragment, scope: Scope, send: Send) -> None:
    started = _perf()
    try:
        answer = route.decide(
            state, scope["method"], scope["path"], scope["query_string"], scope["headers"]
        )
    except PlacementError as exc:
        await send_error(send, 400, "bad_placements", str(exc), "placement")
        state.metrics.responses.inc(("fragment", "400"))
        return
    await send(answer.start)
    await send(answer.body)
    state.metrics.request_seconds.observe(("fragment",), _perf() - started)


def _fragment_answer(
    state: AppState, route: Fragment, method: str, path: str, query: bytes, raw: Headers
) -> Answer:
    """`Fragment.decide`: like `Edge.decide`, with no `await`; raises `PlacementError`."""
    placement = path[len(FRAGMENT_PREFIX) :]
    state.check_placements([placement])
    now = _now()
    site = query_params({"query_string": query}).get("site", [None])[0]
    versions, served, html = _decide_from_headers(
        state, site, dict(raw), now, [placement], render=True
    )
    out = [
        (b"content-type", _HTML),
        (b"cache-control", route.cache_control),
        *(h for h in decision_headers(served.decision, versions) if h[0] != b"cache-control"),
    ]
    answer = Answer(response_messages(200, out, html.encode("utf-8")), versions, served)
    memos = route.memos
    size = _keep_size(state, raw, answer) if memos.fragment.enabled else None
    if size is not None:
        key = memos.keys.fragment(method, path, query, raw)
        # A fragment's body is its own (the HTML), beside the key's bytes.
        _remember(memos.fragment, key, answer, now, size + len(cast(bytes, answer.body["body"])))
    state.service.emit(served, now)
    state.metrics.responses.inc(("fragment", "200"))
    return answer


def remembering(
    state: AppState,
    memos: EdgeMemos,
    edge: Edge,
    fragment: Fragment,
    edge_route: ASGIApp,
    fragment_route: ASGIApp,
) -> dict[str, Remembering]:
    """The GET routes behind their answer memos, by path (`FRAGMENT_PREFIX` stands for every
    fragment path): `edge_route` and `fragment_route` are the checked handlers they fall to."""
    return {
        "/v1/edge": Remembering(
            state,
            memos.edge,
            memos.keys.edge,
            "edge",
            204,
            edge_route,
            decide=functools.partial(edge.decide, state),
        ),
        FRAGMENT_PREFIX: Remembering(
            state,
            memos.fragment,
            memos.keys.fragment,
            "fragment",
            200,
            fragment_route,
            decide=functools.partial(fragment.decide, state),
        ),
    }
