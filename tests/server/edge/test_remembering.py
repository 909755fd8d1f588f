"""`Remembering`, the memo lookup the ASGI route and the HTTP protocol share."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import rules
from server.asgi import Headers, Receive, Scope, Send
from server.config import Secrets, Settings
from server.decide.service import Served
from server.edge.answers import Answer, Answers, make_response
from server.edge.remembering import SAMPLE, WINDOW, Remembering
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


def test_a_memo_that_does_not_pay_is_looked_up_for_one_request_in_sample(tmp_path: Path) -> None:
    # The realistic load: no request repeats another's key. After a window of misses only one
    # request in SAMPLE makes a key; once questions repeat again, every request is looked up.
    state = AppState(Settings(data=str(tmp_path)), Secrets())
    memo = Answers(state).edge
    keyed: list[int] = []

    def key(method: str, path: str, query: bytes, headers: Headers) -> Hashable:
        keyed.append(1)
        return (query, len(keyed))  # a new key every time: never a hit

    remembering = Remembering(state, memo, key, "edge", 204, _never_called)
    for _ in range(WINDOW):
        assert remembering.lookup("GET", "/v1/edge", b"p=a", []) == (None, (b"p=a", len(keyed)))
    assert len(keyed) == WINDOW  # every request looked up while the window fills
    for _ in range(SAMPLE * 10):
        answer, made = remembering.lookup("GET", "/v1/edge", b"p=a", [])
        assert answer is None
        assert made is None or made == (b"p=a", len(keyed))  # None: not looked up, not kept
    assert len(keyed) == WINDOW + 10

    # Questions repeat: the sampled lookups hit, and after a window every request is looked up.
    served = Served(rules.Decision(placements=[], segments=[], key="k"))
    known = Answer(make_response(204, []), b"v", served)
    memo.put("same", known, time.time() - 1, math.inf)
    remembering.key = lambda method, path, query, headers: "same"
    found = 0
    for _ in range(WINDOW * SAMPLE + SAMPLE):
        found += remembering.lookup("GET", "/v1/edge", b"p=a", [])[0] is known
    assert found >= WINDOW
    for _ in range(3 * SAMPLE):
        assert remembering.lookup("GET", "/v1/edge", b"p=a", []) == (known, "same")
