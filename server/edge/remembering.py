"""A GET hot route behind its answer memos, and how the HTTP protocol is handed those routes.

`Remembering.recall` is the one lookup the ASGI route and the HTTP protocol's shortcut
(server/edge/protocol.py) share. The app hands the protocol its remembering routes through the
ASGI lifespan state (`PROTOCOL_ROUTES`), the one channel ASGI defines from an app to its server:
uvicorn gives every connection's protocol that state, so the protocol needs neither the app nor
its middleware layers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable

from ..asgi import ASGIApp, Headers, Receive, Scope, Send
from ..memo import AnswerMemo
from ..state import AppState
from .answers import NOT_KEYED, Answer

log = logging.getLogger("edgeside.edge")
_perf = time.perf_counter
_now = time.time

# The lifespan state key holding the memo-fronted GET routes by path (bytes), for the protocol;
# `FRAGMENT_PREFIX` stands for every fragment path.
PROTOCOL_ROUTES = "edgeside.remembering"

# A request's key in a route's answer memo (server/edge/memo_keys.py), None if it has none.
RequestKey = Callable[[str, str, bytes, Headers], Hashable | None]


def key_of(key: RequestKey, scope: Scope) -> Hashable | None:
    return key(scope["method"], scope["path"], scope["query_string"], scope["headers"])


# Decide a request no memo answered, with no `await` (method, path, query, headers, and its memo
# key if the lookup made one, else `NOT_KEYED`): remembered and counted as the route would;
# raises `PlacementError` for the route's 400.
Decides = Callable[[str, str, bytes, Headers, Hashable | None], Answer]

# A memo whose last `WINDOW` lookups hit less than `COLD` of the time is looked up for one
# request in `SAMPLE` (`Remembering._sample`).
WINDOW = 1024
COLD = 0.05
SAMPLE = 16

# A scope key the HTTP protocol sets on a request it looked up in the memo and did not find.
MEMO_MISSED = "edgeside.memo_missed"


class Remembering:
    """A GET hot route behind its answer memo: an answer already known is sent again, while
    still exact, without parsing anything — the answer to the very request answered a moment
    ago; every other request goes to `route` (the checked handler), which decides and
    remembers the answer. (A stranger's answer to the same question is the decision memo's:
    `DecisionService.serve` shares it between strangers in the same arms.)"""

    def __init__(
        self,
        state: AppState,
        memo: AnswerMemo[Answer],
        key: RequestKey,
        label: str,
        status: int,
        route: ASGIApp,
        decide: Decides | None = None,
    ) -> None:
        self.memo = memo
        self.key = key
        self.route = route
        # For the HTTP protocol, which answers a first question too (server/edge/protocol.py).
        self.decide = decide
        # A header longer than this is the route's 431 (`ContextBuilder.oversized_header`).
        self.header_limit = state.settings.limits.max_header_bytes
        self.service = state.service
        self.responses = state.metrics.responses
        self.response = (label, str(status))  # the memos keep only answers with this status
        self.latency = state.metrics.request_seconds.series((label,))
        self.protocol_answers = state.metrics.protocol_answers
        # Answers sent from the memos since the last scrape (of them, by the HTTP protocol):
        # counted in the metrics then.
        self.sent = 0
        self.sent_by_protocol = 0
        self.decided_by_protocol = 0  # first questions the protocol decided (not from a memo)
        self.protocol_decisions = state.metrics.protocol_decisions
        state.before_scrape.append(self.count_sent)
        # Whether the memo stopped paying (see `lookup`), how many requests to let by unlooked,
        # and the memo's (hits, lookups) when the current window of lookups began.
        self._cold = False
        self._skip = 0
        self._window = (0, 0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = _perf()
        # The protocol may have looked it up already (server/edge/protocol.py).
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
        protocol, before any ASGI request exists (server/edge/protocol.py). A fault here means no
        known answer: the route decides afresh (and fails open itself)."""
        return self.lookup(method, path, query, headers)[0]

    def lookup(
        self, method: str, path: str, query: bytes, headers: Headers
    ) -> tuple[Answer | None, Hashable | None]:
        """`recall`, and the request's memo key (`NOT_KEYED` if none was made: the memo is off,
        or the lookup failed), which the route's `decide` takes rather than making it again."""
        memo = self.memo
        if not memo.enabled:
            return None, NOT_KEYED  # (an empty memo: no key to make, nothing to find)
        if self._skip:
            # A cold memo: this request is neither looked up nor remembered (key None).
            self._skip -= 1
            return None, None
        try:
            key = self.key(method, path, query, headers)
            if key is None:
                return None, None
            return self._recall(key), key
        except Exception:
            log.exception("answer memo lookup failed; deciding afresh")
            return None, NOT_KEYED
        finally:
            self._sample(memo)

    def _sample(self, memo: AnswerMemo[Answer]) -> None:
        """After a lookup: while fewer than `COLD` of the last `WINDOW` lookups hit, look up
        only one request in `SAMPLE`. On a realistic load no request repeats another's key (0 %
        hits), and the key, lookup and doorkeeper cost ~16 µs a request (docs/server.md); the
        requests still looked up (and remembered) notice when questions repeat again (the
        repeats load: 66-73 % hits). Exactness does not depend on it: a request not looked up
        is decided afresh."""
        hits, looked = memo.hits, memo.hits + memo.misses
        since_hits, since = self._window
        if looked - since >= WINDOW:
            self._cold = hits - since_hits < COLD * (looked - since)
            self._window = (hits, looked)
        if self._cold:
            self._skip = SAMPLE - 1

    def _recall(self, key: Hashable) -> Answer | None:
        now = _now()
        answer = self.memo.get(key, now)
        service = self.service
        if answer is None or not service.still_current(answer.served):
            return None
        service.reuse(answer.served, now)
        self.sent += 1
        return answer

    def count_sent(self) -> None:
        sent, self.sent = self.sent, 0
        self.responses.inc(self.response, sent)
        by_protocol, self.sent_by_protocol = self.sent_by_protocol, 0
        self.protocol_answers.inc(self.response[:1], by_protocol)
        decided, self.decided_by_protocol = self.decided_by_protocol, 0
        self.protocol_decisions.inc(self.response[:1], decided)
