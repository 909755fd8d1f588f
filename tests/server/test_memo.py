"""The answer memo: each answer kept until it could change, bounded in age and in entries; past
a few hundred entries, only answers to questions asked twice."""

from __future__ import annotations

import gc
import math

from server.memo import WINDOW, AnswerMemo


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


def test_bytes_are_bounded_too() -> None:
    # Issue 14 defect 4: bounded in entries alone, 50 000 keys of 4 KB were ~385 MB per memo.
    memo: AnswerMemo[int] = AnswerMemo(max_age_s=60, max_entries=1000, max_bytes=8000)
    for i in range(100):
        memo.put(i, i, now=0, expires=math.inf, size=1000)
        assert memo.bytes <= 8000
    assert 4 <= len(memo) <= 8  # two generations of at most 4 000 bytes, not 1 000 entries
    assert memo.get(99, now=1) == 99  # the newest are there
    assert memo.get(0, now=1) is None
    # One entry over a generation's budget is not kept at all.
    memo.put("big", 1, now=0, expires=math.inf, size=4001)
    assert memo.get("big", now=1) is None


def test_bytes_follow_entries_between_generations() -> None:
    memo: AnswerMemo[int] = AnswerMemo(max_age_s=60, max_entries=1000, max_bytes=6000)
    for key in "abc":  # a, b fill the young generation's 3 000 bytes; c starts the next one
        memo.put(key, 1, now=0, expires=math.inf, size=1500)
    assert memo.bytes == 4500
    assert memo.get("a", now=1) == 1  # moved to the young generation with its bytes
    assert memo.bytes == 4500
    memo.put("c", 2, now=0, expires=math.inf, size=1500)  # replaced, not counted twice
    assert memo.bytes == 4500
    memo.clear()
    assert memo.bytes == 0


def test_past_keep_first_an_answer_is_kept_only_once_its_question_was_asked_twice() -> None:
    # Issue 15 item 4: on a realistic load almost every question is new; keeping every answer
    # held ~18 GC-tracked objects per request, and full collections over them stalled the loop.
    memo: AnswerMemo[str] = AnswerMemo(max_age_s=60, max_entries=10, keep_first=0)
    memo.put("k", "first", now=0, expires=math.inf)
    assert memo.get("k", now=1) is None and len(memo) == 0  # asked once: only noted
    memo.put("k", "second", now=1, expires=math.inf)
    assert memo.get("k", now=2) == "second"  # asked again: kept, and the newest answer
    memo.put("other", "x", now=2, expires=math.inf)
    assert memo.get("other", now=3) is None


def test_a_small_memo_keeps_every_answer_at_once() -> None:
    memo: AnswerMemo[int] = AnswerMemo(max_age_s=60, max_entries=100, keep_first=3)
    for i in range(5):
        memo.put(i, i, now=0, expires=math.inf)
    assert [memo.get(i, now=1) for i in range(5)] == [0, 1, 2, None, None]
    memo.put(4, 4, now=0, expires=math.inf)  # asked again
    assert memo.get(4, now=1) == 4


def test_an_expired_answer_asked_again_is_replaced() -> None:
    memo: AnswerMemo[str] = AnswerMemo(max_age_s=60, max_entries=10, keep_first=1)
    memo.put("k", "old", now=0, expires=1)  # kept at once: the memo was empty
    assert memo.get("k", now=2) is None
    memo.put("k", "new", now=2, expires=math.inf)  # in the memo: asked before
    assert memo.get("k", now=3) == "new"


def test_an_answer_that_is_not_kept_is_not_noted_either() -> None:
    # Already expired, or over the byte budget: it could not be given back the next time either.
    memo: AnswerMemo[str] = AnswerMemo(max_age_s=60, max_entries=10, max_bytes=8000, keep_first=0)
    for _ in range(3):
        memo.put("late", "x", now=5, expires=5)
        memo.put("big", "x", now=5, expires=math.inf, size=4001)
    assert len(memo) == 0
    memo.put("fine", "x", now=5, expires=math.inf)
    assert memo.get("fine", now=6) is None  # its first put


def test_noted_questions_are_bounded_and_cleared() -> None:
    memo: AnswerMemo[int] = AnswerMemo(max_age_s=60, max_entries=4, keep_first=0)
    for i in range(100):
        memo.put(i, i, now=0, expires=math.inf)
    assert len(memo) == 0
    assert len(memo._young_seen) + len(memo._old_seen) <= 4  # two generations of two
    memo.put(99, 99, now=0, expires=math.inf)  # among the newest noted: kept
    assert memo.get(99, now=1) == 99
    memo.put(0, 0, now=0, expires=math.inf)  # noted long ago, forgotten since: noted again
    assert memo.get(0, now=1) is None
    memo.put(7, 7, now=0, expires=math.inf)
    memo.clear()  # a new world: what was asked before counts no more
    memo.put(7, 7, now=0, expires=math.inf)
    assert memo.get(7, now=1) is None


def test_noted_questions_hold_nothing_the_collector_tracks() -> None:
    memo: AnswerMemo[str] = AnswerMemo(max_age_s=60, max_entries=1000, keep_first=0)
    for i in range(50):
        memo.put(("GET", b"q=%d" % i, (b"cookie", b"c")), "x", now=0, expires=math.inf)
    assert len(memo) == 0
    assert not gc.is_tracked(memo._young_seen)


def test_while_the_memo_pays_every_answer_is_kept_at_once() -> None:
    # The repeats load: most lookups hit, and a second miss per question would cost more CPU.
    memo: AnswerMemo[int] = AnswerMemo(max_age_s=60, max_entries=10_000, keep_first=1)
    memo.put("hot", 0, now=0, expires=math.inf)
    for _ in range(WINDOW):  # a whole window of hits
        assert memo.get("hot", now=1) == 0
    memo.put("new", 1, now=1, expires=math.inf)  # at first sight
    assert memo.get("new", now=2) == 1
    for i in range(WINDOW):  # a whole window of misses: it no longer pays
        assert memo.get(("miss", i), now=2) is None
    memo.put("later", 2, now=2, expires=math.inf)
    assert memo.get("later", now=3) is None  # only noted
    memo.put("later", 2, now=2, expires=math.inf)
    assert memo.get("later", now=3) == 2
