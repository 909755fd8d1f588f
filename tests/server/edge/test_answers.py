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
