"""What the GET hot routes answer — one object owns it: `Answers`.

An `Answer` is a whole response (its status, header bytes and body: a `Response`, shared by
answers whose headers are the same) and what it was decided for. `Answers` owns everything about
them on the edge room's side: the answer memos of `/v1/edge` and `/v1/fragments/…` and how a
request is keyed in them (server/edge/memo_keys.py), the responses by what their headers are made
of, what an answer costs a memo, and clearing all of it when a new world is swapped in. The
worker's state reports the memos' hits before a scrape.

Nothing here keeps a decision, an ASGI message or anything keyed by `id()`: a cache keyed by an
object's id must keep the object alive (ids are reused once it dies), and thousands of decisions
kept that way were what the young GC generation walked at every collection (50 ms pauses on the
realistic load, issue 15 item 4). Responses are found by content, in a small bounded dict.
"""

from __future__ import annotations

from collections.abc import Hashable

import rules

from ..asgi import Headers, header_lines, header_value
from ..decide.context import MEMO_KEY_MAX_BYTES
from ..decide.service import Served, fallback_reason
from ..decide.world import World
from ..memo import ENTRY_BYTES, AnswerMemo
from ..state import AppState
from .memo_keys import MemoKeys

Message = dict[str, object]
_HTML = b"text/html; charset=utf-8"


class Response:
    """A response's status, header bytes and body, as the ASGI route sends them and, once made,
    as HTTP/1.1 bytes (`wire`: split around the server's own headers, made by
    server/edge/protocol.py the first time it writes this response; `safe` False when a header
    fails uvicorn's check, so the protocol leaves the request to uvicorn)."""

    __slots__ = ("body", "headers", "lines", "safe", "status", "wire")

    def __init__(
        self,
        status: int,
        headers: tuple[tuple[bytes, bytes], ...],
        body: bytes,
        lines: bytes | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        # `headers` as HTTP/1.1 header lines, when whoever made them knows every one passes
        # `header_safe` (`Answers.edge_answer`); else the protocol checks and joins them.
        self.lines = lines
        self.wire: tuple[bytes, bytes] | None = None
        self.safe = True


def make_response(status: int, headers: Headers, body: bytes = b"") -> Response:
    if status != 204:  # RFC 9110 §8.6: no Content-Length on a 204
        headers = [*headers, (b"content-length", b"%d" % len(body))]
    return Response(status, tuple(headers), body)


class Answer:
    """A whole response of a GET hot route (server/edge/routes.py) as the answer memo keeps it,
    and what it was decided for (the snapshot versions, the served decision)."""

    __slots__ = ("response", "served", "versions")

    def __init__(self, response: Response, versions: bytes, served: Served) -> None:
        self.response = response
        self.versions = versions
        self.served = served

    @property
    def start(self) -> Message:
        """The ASGI `http.response.start` message (made per send: the ASGI path only)."""
        response = self.response
        return {
            "type": "http.response.start",
            "status": response.status,
            "headers": list(response.headers),
        }

    @property
    def body(self) -> Message:
        return {"type": "http.response.body", "body": self.response.body}


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


_BODY_HEADERS = frozenset((b"content-length", b"transfer-encoding"))

# A memo key not made yet (`Answers.keep`): None means the request has none (unkeyable).
NOT_KEYED: Hashable = object()


class Answers:
    """The answers of `/v1/edge` and `/v1/fragments/…`: the memos of a moment ago, per route, how
    a request is keyed in them (by what the current rules can depend on: reset for each world's
    rules), the responses by content, and clearing all of it on a swap."""

    # Distinct `/v1/edge` responses kept (by what their headers are made of). Small on purpose:
    # entries live long, so the collector walks them; the realistic load makes thousands of
    # distinct header sets, and one made afresh costs a few µs.
    MAX_RESPONSES = 256

    def __init__(self, state: AppState) -> None:
        self.state = state
        settings = state.settings
        bounds = settings.memo_ttl_s, settings.memo_max_entries, settings.memo_max_bytes
        self.keys = MemoKeys(state.builder, settings.limits.max_header_bytes)
        self.edge: AnswerMemo[Answer] = AnswerMemo(*bounds)
        self.fragment: AnswerMemo[Answer] = AnswerMemo(*bounds)
        self._responses: dict[tuple[object, ...], Response] = {}
        # The headers after `x-edge-key`, and their lines, by what they are made of (`_rest`).
        self._rests: dict[tuple[object, ...], tuple[tuple[tuple[bytes, bytes], ...], bytes | None]]
        self._rests = {}
        state.add_memos({"edge": self.edge, "fragment": self.fragment})
        state.holder.on_swap.append(self._swapped)

    def _swapped(self, world: World) -> None:
        # (The state clears the memos; the responses carry their versions in their key, so
        # clearing them only lets the old world's go.)
        self._responses = {}
        self._rests = {}
        self.keys.use(None if world.engine is None else world.engine.context_fields)

    def edge_answer(self, served: Served, versions: bytes) -> Answer:
        """`/v1/edge`'s answer to a served decision: its response found by what its headers are
        made of, exactly (`decision_headers` reads no more), before making them — different
        decisions (each visitor's own) often make the same headers. A new one is made from the
        headers but `x-edge-key` of an earlier decision with the same others (`_rest`): the key
        hashes the content ids, so visitors with their own picks have their own key, while
        what the rest is made of takes a few hundred values."""
        decision = served.decision
        rest = (
            versions,
            decision.ttl,
            decision.unknown_site,
            tuple([(p.placement, p.variant, p.fallback) for p in decision.placements]),
            tuple(decision.segments),
        )
        made_of = (decision.key, rest)
        responses = self._responses
        response = responses.get(made_of)
        if response is None:
            tail, tail_lines = self._rest(rest, decision, versions)
            key = header_value(decision.key)
            # `header_value` writes only header-safe bytes, so the key's line needs no check.
            lines = None if tail_lines is None else b"x-edge-key: " + key + b"\r\n" + tail_lines
            response = Response(204, ((b"x-edge-key", key), *tail), b"", lines)
            if len(responses) >= self.MAX_RESPONSES:
                self._responses = responses = {}
            responses[made_of] = response
        return Answer(response, versions, served)

    def _rest(
        self, rest: tuple[object, ...], decision: rules.Decision, versions: bytes
    ) -> tuple[tuple[tuple[bytes, bytes], ...], bytes | None]:
        """The headers after `x-edge-key` of a decision whose headers are made of `rest` (and
        its key), and their lines if every one passes `header_safe` (else None: the protocol
        leaves such an answer to uvicorn), made once per distinct `rest`."""
        hit = self._rests.get(rest)
        if hit is None:
            tail = tuple(decision_headers(decision, versions)[1:])
            lines = header_lines(tail)
            if len(self._rests) >= self.MAX_RESPONSES:
                self._rests = {}
            hit = self._rests[rest] = (tail, lines)
        return hit

    def fragment_answer(
        self, served: Served, versions: bytes, cache_control: bytes, html: bytes
    ) -> Answer:
        out = [
            (b"content-type", _HTML),
            (b"cache-control", cache_control),
            *(h for h in decision_headers(served.decision, versions) if h[0] != b"cache-control"),
        ]
        return Answer(make_response(200, out, html), versions, served)

    def keep(
        self,
        memo: AnswerMemo[Answer],
        key: Hashable | None,
        raw: Headers,
        answer: Answer,
        now: float,
        own_bytes: int = 0,
    ) -> None:
        """Remember a fresh answer to the request with headers `raw` under its memo key (None:
        unkeyable), holding `own_bytes` besides its key's: not one decided on a world already
        replaced, a fallback, one to a request too large to be worth keeping, or one to a
        request with a body (the protocol answers a repeat as soon as its headers are in)."""
        served = answer.served
        if (
            key is None
            or not served.remember
            or answer.versions != self.state.holder.current.snapshot_header
        ):
            return
        size = 0
        for name, value in raw:
            if name in _BODY_HEADERS:
                return
            size += len(name) + len(value)
        if size <= MEMO_KEY_MAX_BYTES:
            memo.put(key, answer, now, served.expires, size + ENTRY_BYTES + own_bytes)
