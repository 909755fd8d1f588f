"""`Answers`: responses found by content, never by identity, and nothing kept that the young GC
generation would walk for thousands of requests (issue 15 item 4)."""

from __future__ import annotations

import sys
from pathlib import Path

import rules
from server.config import Secrets, Settings
from server.decide.service import Served
from server.edge.answers import Answers, decision_headers
from server.state import AppState


def decision(variant: str, segments: list[str], fallback: str | None = None) -> rules.Decision:
    placement = rules.PlacementDecision(
        placement="hero", variant=variant, content=["c1"], fallback=fallback
    )
    return rules.Decision(placements=[placement], segments=segments, key=f"k-{variant}", ttl=30)


def answers(tmp_path: Path) -> Answers:
    return Answers(AppState(Settings(data=str(tmp_path)), Secrets()))


def test_answers_with_the_same_headers_share_a_response_and_others_never_do(
    tmp_path: Path,
) -> None:
    owner = answers(tmp_path)
    made: dict[tuple[str, tuple[str, ...], str | None, bytes], object] = {}
    for _ in range(3):  # many decisions, fresh objects each time: ids get reused as they die
        for variant in ("plain", "big", "welcome"):
            for segments in ([], ["vip"], ["vip", "new"]):
                for fallback in (None, "deadline"):
                    for versions in (b"v1", b"v2"):
                        d = decision(variant, segments, fallback)
                        answer = owner.edge_answer(Served(d), versions)
                        # The bytes are exactly this decision's headers, whichever answer made them.
                        assert list(answer.response.headers) == decision_headers(d, versions)
                        key = (variant, tuple(segments), fallback, versions)
                        shared = made.setdefault(key, answer.response)
                        assert answer.response is shared
    assert len({id(r) for r in made.values()}) == len(made)


def test_the_responses_keep_no_decision_alive(tmp_path: Path) -> None:
    owner = answers(tmp_path)
    d = decision("big", ["vip"])
    served = Served(d)
    before = sys.getrefcount(d), sys.getrefcount(served)
    owner.edge_answer(served, b"v1")  # the answer itself is dropped at once
    assert len(owner._responses) == 1
    assert (sys.getrefcount(d), sys.getrefcount(served)) == before


def test_the_responses_stay_bounded(tmp_path: Path) -> None:
    owner = answers(tmp_path)
    for i in range(3 * Answers.MAX_RESPONSES):
        owner.edge_answer(Served(decision(f"v{i}", [])), b"v1")
        assert len(owner._responses) <= Answers.MAX_RESPONSES


def test_header_lines_made_with_a_response_are_its_headers_checked_and_joined(
    tmp_path: Path,
) -> None:
    # A response is made from the other headers of an earlier decision with a different key;
    # the lines the protocol writes for it must be exactly its own headers, and none at all
    # (so the protocol checks and leaves it to uvicorn) when one of them is not header-safe.
    from server.asgi import header_safe

    owner = answers(tmp_path)
    for versions in (b"v1", b"v1\r\nx-injected: 1"):
        for key in ("k1", "k2", "k1"):
            d = decision("big", ["vip"])
            d.key = key
            response = owner.edge_answer(Served(d), versions).response
            assert list(response.headers) == decision_headers(d, versions)
            if all(header_safe(n, v) for n, v in response.headers):
                assert response.lines == b"".join(
                    n + b": " + v + b"\r\n" for n, v in response.headers
                )
            else:
                assert response.lines is None
    assert len(owner._rests) == 2  # one per versions: the keys share the rest
