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
from typing import NamedTuple, Protocol

from ..asgi import (
    ASGIApp,
    Headers,
    Receive,
    Scope,
    Send,
    query_params,
    send_error,
    send_response,
)
from ..decide.context import ANONYMOUS, PlacementError, split_placements
from ..decide.service import Served
from ..state import AppState
from .answers import NOT_KEYED, Answer, Answers
from .fragments import render_fragment
from .remembering import Remembering

log = logging.getLogger("edgeside.edge")
_perf = time.perf_counter
_now = time.time


# What a proxy gets if the edge handler itself fails: the page renders with its defaults.
_EDGE_FAILED: Headers = [
    (b"x-edge-key", b"default"),
    (b"x-edge-fallback", b"internal_error"),
    (b"cache-control", b"no-store"),
]


class Edge:
    """`GET /v1/edge` behind `Remembering`: a request not answered a moment ago.

    The parsed query (site and placements) is remembered by its raw bytes in a small bounded
    dict; the answer's response is `Answers`' (found by what its headers are made of).
    """

    _MAX_QUERIES = 256

    def __init__(self, answers: Answers) -> None:
        self.answers = answers
        self._queries: dict[tuple[bytes, bytes | None], tuple[str | None, tuple[str, ...]]] = {}

    async def __call__(self, state: AppState, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._edge(state, scope, send)
        except Exception:
            log.exception("edge handler failed")
            state.metrics.fallbacks.inc(("internal_error",))
            await send_response(send, 204, _EDGE_FAILED)

    async def _edge(self, state: AppState, scope: Scope, send: Send) -> None:
        await _send_decided(state, self, "edge", "X-Placements", scope, send)

    def decide(
        self,
        state: AppState,
        method: str,
        path: str,
        query: bytes,
        raw: Headers,
        key: Hashable | None = NOT_KEYED,
    ) -> Answer:
        """Decide a request no memo answered, remember the answer, count it; the caller sends it
        and observes its latency. No `await`: the HTTP protocol calls this too, before any ASGI
        request exists (server/edge/protocol.py), with the memo key its lookup made (`key`).
        Raises `PlacementError` (a 400, the route's)."""
        headers = dict(raw)
        now = _now()
        site, placements = self._query(state, query, headers)
        versions, served, _ = _decide_from_headers(state, site, headers, now, placements)
        answers = self.answers
        answer = answers.edge_answer(served, versions)
        memo = answers.edge
        # (A memo turned off keeps nothing: no key to make for it.)
        if memo.enabled and served.remember:
            if key is NOT_KEYED:
                key = answers.keys.edge(method, path, query, raw)
            answers.keep(memo, key, raw, answer, now)
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
        if len(self._queries) >= self._MAX_QUERIES:
            self._queries.clear()
        hit = self._queries[key] = (query.get("site", [None])[0], tuple(placements))
        return hit


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


class Fragment:
    """`GET /v1/fragments/{placement}` behind `Remembering`: the chosen content as HTML, for an
    ESI/SSI include."""

    def __init__(self, answers: Answers, max_age_s: int) -> None:
        self.answers = answers
        # Includes are fetched per visitor: short-lived and never shared by a cache.
        self.cache_control = b"private, max-age=%d" % max_age_s

    async def __call__(self, state: AppState, scope: Scope, receive: Receive, send: Send) -> None:
        await _send_decided(state, self, "fragment", "placement", scope, send)

    def decide(
        self,
        state: AppState,
        method: str,
        path: str,
        query: bytes,
        raw: Headers,
        key: Hashable | None = NOT_KEYED,
    ) -> Answer:
        return _fragment_answer(state, self, method, path, query, raw, key)


class _Deciding(Protocol):
    def decide(
        self, state: AppState, method: str, path: str, query: bytes, raw: Headers
    ) -> Answer: ...


async def _send_decided(
    state: AppState, route: _Deciding, name: str, field: str, scope: Scope, send: Send
) -> None:
    """Decide a request under ASGI and send the answer; bad placements are the route's 400,
    naming `field` (where they came from)."""
    started = _perf()
    try:
        answer = route.decide(
            state, scope["method"], scope["path"], scope["query_string"], scope["headers"]
        )
    except PlacementError as exc:
        await send_error(send, 400, "bad_placements", str(exc), field)
        state.metrics.responses.inc((name, "400"))
        return
    await send(answer.start)
    await send(answer.body)
    state.metrics.request_seconds.observe((name,), _perf() - started)


def _fragment_answer(
    state: AppState,
    route: Fragment,
    method: str,
    path: str,
    query: bytes,
    raw: Headers,
    key: Hashable | None,
) -> Answer:
    """`Fragment.decide`: like `Edge.decide`, with no `await`; raises `PlacementError`."""
    placement = path[len(FRAGMENT_PREFIX) :]
    state.check_placements([placement])
    now = _now()
    site = query_params({"query_string": query}).get("site", [None])[0]
    versions, served, html = _decide_from_headers(
        state, site, dict(raw), now, [placement], render=True
    )
    answers = route.answers
    body = html.encode("utf-8")
    answer = answers.fragment_answer(served, versions, route.cache_control, body)
    memo = answers.fragment
    if memo.enabled and served.remember:
        if key is NOT_KEYED:
            key = answers.keys.fragment(method, path, query, raw)
        # A fragment's body is its own (the HTML), beside the key's bytes.
        answers.keep(memo, key, raw, answer, now, len(body))
    state.service.emit(served, now)
    state.metrics.responses.inc(("fragment", "200"))
    return answer


def remembering(
    state: AppState,
    answers: Answers,
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
            answers.edge,
            answers.keys.edge,
            "edge",
            204,
            edge_route,
            decide=functools.partial(edge.decide, state),
        ),
        FRAGMENT_PREFIX: Remembering(
            state,
            answers.fragment,
            answers.keys.fragment,
            "fragment",
            200,
            fragment_route,
            decide=functools.partial(fragment.decide, state),
        ),
    }
