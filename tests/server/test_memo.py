"""The answer memo: bounded in age (one time slot) and in size."""

from __future__ import annotations

from server.memo import SlotMemo


def test_answers_live_at_most_one_slot() -> None:
    memo: SlotMemo[str] = SlotMemo(ttl_s=1.0, max_entries=10)
    assert memo.get("k", now=100.2) is None
    memo.put("k", "answer")
    assert memo.get("k", now=100.9) == "answer"
    assert memo.get("k", now=101.0) is None  # a new slot starts empty
    assert (memo.hits, memo.misses) == (1, 2)


def test_size_is_bounded() -> None:
    memo: SlotMemo[int] = SlotMemo(ttl_s=1.0, max_entries=3)
    memo.get("first", now=5.0)
    for i in range(10):
        memo.put(i, i)
    assert [memo.get(i, now=5.5) for i in range(5)] == [0, 1, 2, None, None]


def test_zero_ttl_disables() -> None:
    assert not SlotMemo(ttl_s=0, max_entries=10).enabled
