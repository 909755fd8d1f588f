"""The answer memo: each answer kept until it could change, bounded in age and in entries."""

from __future__ import annotations

import math

from server.memo import AnswerMemo


def test_an_answer_lives_until_it_expires() -> None:
    memo: AnswerMemo[str] = AnswerMemo(max_age_s=60, max_entries=10)
    assert memo.get("k", now=100.0) is None
    memo.put("k", "answer", now=100.0, expires=100.5)
    assert memo.get("k", now=100.4) == "answer"
    assert memo.get("k", now=100.5) is None  # exactly at `expires` it may have changed
    assert (memo.hits, memo.misses) == (1, 2)


def test_max_age_caps_a_time_independent_answer() -> None:
    memo: AnswerMemo[str] = AnswerMemo(max_age_s=60, max_entries=10)
    memo.put("k", "answer", now=100.0, expires=math.inf)
    assert memo.get("k", now=159.9) == "answer"
    assert memo.get("k", now=160.0) is None


def test_an_already_expired_answer_is_not_kept() -> None:
    memo: AnswerMemo[str] = AnswerMemo(max_age_s=60, max_entries=10)
    memo.put("k", "answer", now=100.0, expires=100.0)
    assert len(memo) == 0


def test_entries_are_bounded_and_those_in_use_survive() -> None:
    memo: AnswerMemo[int] = AnswerMemo(max_age_s=60, max_entries=4)  # two generations of two
    memo.put("a", 1, now=0, expires=math.inf)
    memo.put("b", 2, now=0, expires=math.inf)
    memo.put("c", 3, now=0, expires=math.inf)  # a, b become the old generation
    assert memo.get("a", now=1) == 1  # used: moves back to the young one (c, a)
    memo.put("d", 4, now=0, expires=math.inf)  # young full: (c, a) old, b dropped
    assert memo.get("b", now=1) is None
    assert [memo.get(k, now=1) for k in "acd"] == [1, 3, 4]
    assert len(memo) <= 4


def test_clear_forgets_everything() -> None:
    memo: AnswerMemo[str] = AnswerMemo(max_age_s=60, max_entries=10)
    memo.put("k", "answer", now=0, expires=math.inf)
    memo.clear()
    assert memo.get("k", now=1) is None


def test_zero_age_disables() -> None:
    memo: AnswerMemo[str] = AnswerMemo(max_age_s=0, max_entries=10)
    assert not memo.enabled
    memo.put("k", "answer", now=0, expires=math.inf)
    assert memo.get("k", now=0) is None


def test_an_answer_is_never_given_for_an_instant_before_it_was_decided() -> None:
    memo: AnswerMemo[str] = AnswerMemo(max_age_s=60, max_entries=10)
    memo.put("k", "answer", now=100.0, expires=math.inf)
    assert memo.get("k", now=99.9) is None  # the clock stepped back, or "as of" earlier
    assert memo.get("k", now=100.0) == "answer"
