"""What the GET hot routes answer, and the memos they remember answers in.

An `Answer` is a whole response as its ASGI messages, built once and sent again as it is; the
edge room's memos (`EdgeMemos`) hold them by request key (server/edge/memo_keys.py). They are the
edge room's own: it registers them with the worker's state, which clears them when a new world is
swapped in and reports their hits before a scrape.
"""

from __future__ import annotations

from ..decide.service import Served
from ..decide.world import World
from ..memo import AnswerMemo
from ..state import AppState
from .memo_keys import MemoKeys

Message = dict[str, object]


def response_messages(
    status: int, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> tuple[Message, Message]:
    """The two ASGI messages of a whole response."""
    if status != 204:  # RFC 9110 §8.6: no Content-Length on a 204
        headers = [*headers, (b"content-length", b"%d" % len(body))]
    return (
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body},
    )


class Answer:
    """A whole response of a GET hot route (server/edge/routes.py) as the answer memo keeps it:
    its two ASGI messages, built once (and shared by answers that are the same) and sent again as
    they are, and what it was decided for."""

    __slots__ = ("body", "served", "start", "versions", "wire")

    def __init__(self, messages: tuple[Message, Message], versions: bytes, served: Served) -> None:
        self.start, self.body = messages
        self.versions = versions  # the snapshot versions it was decided with
        self.served = served
        # The same response as HTTP/1.1 bytes, split around the server's own headers: made by
        # server/edge/protocol.py the first time it answers a repeat with it.
        self.wire: tuple[bytes, bytes] | None = None


class EdgeMemos:
    """The answers of `/v1/edge` and `/v1/fragments/…` a moment ago, per route, and how a request
    is keyed in them (by what the current rules can depend on: reset for each world's rules)."""

    def __init__(self, state: AppState) -> None:
        settings = state.settings
        bounds = settings.memo_ttl_s, settings.memo_max_entries, settings.memo_max_bytes
        self.keys = MemoKeys(state.builder, settings.limits.max_header_bytes)
        self.edge: AnswerMemo[Answer] = AnswerMemo(*bounds)
        self.fragment: AnswerMemo[Answer] = AnswerMemo(*bounds)
        state.add_memos({"edge": self.edge, "fragment": self.fragment})
        state.holder.on_swap.append(self._rekey)

    def _rekey(self, world: World) -> None:
        self.keys.use(None if world.engine is None else world.engine.context_fields)
