"""The HTTP protocol edgeside serves with: uvicorn's httptools protocol, plus one shortcut.

A proxy asks the same questions again and again: the same visitor on another page, strangers in the
same context. The GET hot routes (`/v1/edge`, `/v1/fragments/…`) keep their answers in answer memos
(server/edge/remembering.py `Remembering`, keyed by server/edge/memo_keys.py), but under ASGI even a
memo hit pays everything uvicorn charges any request — a scope, a task, a request-response cycle,
header checks on the way out — about as much as a bare ASGI app's whole answer. That is what kept
`/v1/edge` below 0.8 × a bare ASGI app (issue 4, `python -m bench.http`).

So a well-formed GET to those routes is answered here, as soon as its headers are parsed: a
question answered before from the same memos, looked up with the same keys by the same
`Remembering.recall` (still exact, the visitor's live activity unchanged, counted and logged like
any answer); any other by the route's own `decide` (`Remembering.decide`), which holds no `await`
— the same function the ASGI route calls, remembering, emitting and counting as it does (issue 15:
most of a real site's questions are first questions). Both are written as the bytes uvicorn would
have written, made once per distinct set of answer headers. Everything the shortcut is not sure of
(a body, `Expect`, an upgrade, HTTP/1.0 or `Connection: close`, a pipelined request behind one
still running, a paused transport, an access log to write, an encoded path; after looking, a header
over the limit, placements the route refuses, a fault) goes on to uvicorn's protocol and the ASGI
app unchanged.

`POST /v1/decide` too (server/edge/posts.py): its request is held while its body arrives, within
its declared `Content-Length` and the body limit, and answered at the message's end by the route's
own `respond` (no `await` once the body is in); a chunked or over-long body goes to uvicorn as it
comes, and a held request that faults is handed over as the parser gave it (`_replay`).

Besides, one keep-alive timer per idle spell instead of one per request (server/edge/keepalive.py),
and the ASGI scope made only for a request that goes on to the app (`_make_scope`).

It relies on `HttpToolsProtocol` internals, so uvicorn is pinned to the versions the tests cover
(tests/server/edge/test_protocol.py compares the shortcut's bytes with the ASGI route's); the
setting `protocol_memo: false` serves with uvicorn's own protocol instead.

The app hands this protocol its routes in the ASGI lifespan state (`PROTOCOL_ROUTES`, see
server/edge/remembering.py, and `PROTOCOL_POSTS`); without them (no lifespan, CORS on) every
request goes to the app.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable
from typing import Any, cast

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from ..asgi import JSON_HEADERS, Headers, Scope, content_length, header_lines
from ..decide.context import PlacementError
from .accept import BurstAccept
from .answers import Answer, Response, make_response
from .keepalive import IdleTimer
from .linger import LingeringClose
from .posts import PROTOCOL_POSTS, BodyRoute
from .remembering import MEMO_MISSED, PROTOCOL_ROUTES, Remembering
from .routes import FRAGMENT_PREFIX
from .tick import BoundedTick

EDGE_PATH = b"/v1/edge"
_FRAGMENTS = FRAGMENT_PREFIX.encode()
_perf = time.perf_counter
log = logging.getLogger("edgeside.edge")


class MemoProtocol(BoundedTick, BurstAccept, IdleTimer, LingeringClose, HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol, answering well-formed GET /v1/edge and fragment requests
    itself: from the memos, or decided here — a budget's worth per loop iteration
    (server/edge/tick.py)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        routes: dict[bytes, Remembering] = app_state.get(PROTOCOL_ROUTES, {})
        posts: dict[bytes, BodyRoute] = app_state.get(PROTOCOL_POSTS, {})
        if self.access_log or self.root_path:
            routes, posts = {}, {}  # the shortcut writes no access log and knows no root path
        self.edge = routes.get(EDGE_PATH)
        self.fragments = routes.get(_FRAGMENTS)
        self.posts = posts
        # The message being parsed was answered here: its end is not the ASGI cycle's business.
        self.answered = False
        # A POST answered here once its body is in: its route and the body so far (`_hold`).
        self.held: tuple[BodyRoute, list[bytes]] | None = None
        self.close_after = False  # shutting down: close once the held request is answered

    def on_message_begin(self) -> None:
        # uvicorn's makes the request's ASGI scope here (a dict, a copy of the lifespan state):
        # only a request left to the app needs one, so it is made then (`_make_scope`).
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def _make_scope(self) -> None:
        """The scope uvicorn's `on_message_begin` makes, for the request parsed so far."""
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()
        self.url, self.headers, self.expect_100_continue = url, headers, expect
        self.scope["headers"] = headers

    def on_headers_complete(self) -> None:
        answered = self._answer_repeat() if self.edge is not None else None
        if answered:
            self.answered = True
            return
        if answered is None and self.posts and self._hold():
            return
        self._make_scope()
        if answered is not None:  # looked up and missed: the route need not look again
            cast(dict[str, object], self.scope)[MEMO_MISSED] = True
        # An answer earlier in this read armed the keep-alive timer; this request must not be
        # cut off by it (uvicorn disarms it only when data arrives).
        self._unset_keepalive_if_required()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        held = self.held
        if held is not None:
            held[1].append(body)  # (at most the route's body limit: `_hold`)
        elif not self.answered:
            super().on_body(body)

    def on_message_complete(self) -> None:
        held = self.held
        if held is not None:
            self.held = None
            self._answer_post(*held)
            return
        if self.answered:
            self.answered = False
            return
        super().on_message_complete()

    def shutdown(self) -> None:
        if self.held is not None:
            self.close_after = True  # as uvicorn does for a request in flight: answer, then close
            return
        super().shutdown()

    def _plain(self, method: bytes) -> bool:
        """Whether the request whose headers were just parsed is a `method` request this
        shortcut may answer in turn: HTTP/1.1 kept alive, nothing to negotiate, no answer
        before it still running (a pipelined request: answers keep order)."""
        parser = self.parser
        if (
            parser.get_method() != method
            or self.expect_100_continue
            or parser.get_http_version() != "1.1"
            or not parser.should_keep_alive()
            or parser.should_upgrade()
            or self.flow.write_paused
        ):
            return False
        cycle = self.cycle
        return cycle is None or cycle.response_complete

    def _answer_repeat(self) -> bool | None:
        """Answer the request whose headers were just parsed, from its route's memo or decided
        afresh, if this shortcut can answer it exactly as the ASGI route would: True if it did,
        False if it looked the request up and left it to the route, None if it did not look."""
        if not self._plain(b"GET"):
            return None
        path, _, query = self.url.partition(b"?")
        route = self.edge if path == EDGE_PATH else None
        if route is None and path.startswith(_FRAGMENTS):
            route = self.fragments
        if route is None or b"%" in path or b"#" in query or not path.isascii():
            return None  # (an encoded path: the ASGI scope would hold another path, another key)
        started = _perf()
        text_path = path.decode("ascii")
        headers = self.headers
        answer, key = route.lookup("GET", text_path, query, headers)
        decided = False
        if answer is None:
            answer = _decide(route, text_path, query, headers, key)
            if answer is None:
                return False
            decided = True
        wire = self._wire(answer.response)
        if wire is None:
            return False  # a header that fails the check: uvicorn answers (and refuses it)
        if decided:
            route.decided_by_protocol += 1
        else:
            route.sent_by_protocol += 1
        self.transport.write(wire)
        self.on_response_complete()  # uvicorn's bookkeeping: request count, keep-alive timer
        route.latency.observe(_perf() - started)
        return True

    def _hold(self) -> bool:
        """Whether the POST whose headers were just parsed is one to answer here once its body
        is in (`_answer_post`): to a route handed to this protocol, its body's length declared
        and within the route's limit, no header over the limit. Anything else — a chunked body,
        an over-long one (the route's 413), a path to decode — goes on to uvicorn."""
        if not self._plain(b"POST"):
            return False
        path, _, query = self.url.partition(b"?")
        route = self.posts.get(path)
        if route is None or b"#" in query:
            return False
        length = None
        limit = route.header_limit
        for name, value in self.headers:
            if len(value) > limit or name == b"transfer-encoding":
                return False
            if name == b"content-length":
                if length is not None:
                    return False  # (two lengths: uvicorn's parser decides what that means)
                length = value
        declared = content_length(length)
        if declared is None or declared > route.max_body:
            return False
        self.held = (route, [])
        return True

    def _answer_post(self, route: BodyRoute, parts: list[bytes]) -> None:
        """Answer the held POST, its body now whole, as its ASGI route would (`BodyRoute`); on a
        fault, hand the request to uvicorn as if it had never been held."""
        body = b"".join(parts)
        path, _, query = self.url.partition(b"?")
        scope = {
            "type": "http",
            "method": "POST",
            "path": path.decode("ascii"),
            "query_string": query,
            "headers": self.headers,
        }
        try:
            status, out = route.respond(cast(Scope, scope), body)
            wire = self._wire(make_response(status, JSON_HEADERS, out))
        except Exception:
            log.exception("answering a POST in the protocol failed; the ASGI route answers")
            wire = None
        if wire is None:
            self._replay(body)
            return
        route.answered += 1
        self.transport.write(wire)
        self.on_response_complete()
        if self.close_after:
            self.transport.close()

    def _replay(self, body: bytes) -> None:
        """Hand a held request to uvicorn: its headers, body and end, as the parser gave them."""
        self._make_scope()
        self._unset_keepalive_if_required()
        super().on_headers_complete()
        if body:
            super().on_body(body)
        super().on_message_complete()

    def _wire(self, response: Response) -> bytes | None:
        """A response as uvicorn writes it: status line, the server's headers (`date`, which
        changes every second), the response's headers, a blank line, the body. None if a header
        fails `header_safe`: uvicorn checks every header it writes, and so does this shortcut
        (once per response, when its bytes are made)."""
        wire = response.wire
        if wire is None:
            # Made once per response: answers with the same headers share it (`Answers`).
            if not response.safe:
                return None
            lines = response.lines  # made and checked with its headers (`Answers.edge_answer`)
            if lines is None:
                lines = header_lines(response.headers)
                if lines is None:
                    response.safe = False
                    return None
            wire = response.wire = (STATUS_LINE[response.status], lines + b"\r\n" + response.body)
        return wire[0] + _server_headers(self.server_state.default_headers) + wire[1]


def _decide(
    route: Remembering, path: str, query: bytes, headers: Headers, key: Hashable | None
) -> Answer | None:
    """A first question, decided here as its route would (`Remembering.decide`: no `await` in a
    decision), or None to leave it to the ASGI route: a request with a body (uvicorn reads it),
    a header over the limit (the route's 431), bad placements (its 400), or a fault (the route
    fails open, with its reason header)."""
    decide = route.decide
    if decide is None:
        return None
    limit = route.header_limit
    for name, value in headers:  # (one pass for both: `ContextBuilder.oversized_header`'s test)
        if len(value) > limit or name in _BODY_HEADERS:
            return None
    try:
        return decide("GET", path, query, headers, key)
    except PlacementError:
        return None
    except Exception:
        log.exception("deciding in the protocol failed; the ASGI route answers")
        return None


_BODY_HEADERS = frozenset((b"content-length", b"transfer-encoding"))
_defaults: tuple[list[tuple[bytes, bytes]], bytes] = ([], b"")


def _server_headers(headers: list[tuple[bytes, bytes]]) -> bytes:
    """uvicorn's default headers as bytes; it makes a new list each second (the `date`)."""
    global _defaults
    if _defaults[0] is not headers:
        _defaults = (headers, b"".join(name + b": " + value + b"\r\n" for name, value in headers))
    return _defaults[1]
