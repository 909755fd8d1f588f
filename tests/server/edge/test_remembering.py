"""`Remembering`, the memo lookup the ASGI route and the HTTP protocol share."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from server.asgi import Headers, Receive, Scope, Send
from server.config import Secrets, Settings
from server.edge.answers import Answers
from server.edge.remembering import Remembering
from server.state import AppState


def test_a_fault_in_the_memo_lookup_leaves_the_request_to_its_route(tmp_path: Path) -> None:
    # Fail-open (SPEC §6): the protocol and the ASGI path both ask `recall`; a fault there must
    # mean "no known answer", never a 5xx or a dropped connection.
    state = AppState(Settings(data=str(tmp_path)), Secrets())
    decided: list[str] = []

    def broken_key(method: str, path: str, query: bytes, headers: Headers) -> Hashable:
        raise RuntimeError("a bug in a key function")

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        decided.append(scope["path"])

    remembering = Remembering(state, Answers(state).edge, broken_key, "edge", 204, route)
    assert remembering.recall("GET", "/v1/edge", b"p=a", []) is None
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/v1/edge",
        "query_string": b"",
        "headers": [],
    }
    asyncio.run(remembering(scope, _never_called, _never_called))
    assert decided == ["/v1/edge"]


async def _never_called(*args: object) -> Any:
    raise AssertionError("the route, not the memo, answers")
