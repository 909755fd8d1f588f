"""A bounded memo of answers, each kept until the moment it could change.

A proxy asks the same question many times a second (the same returning visitor, the same anonymous
context), and a decision is a pure function of its inputs, the snapshot versions, the visitor's
live activity and the clock. The rules engine says until when a decision stays exactly what it is
(`rules.Decision.expires`: the next hour boundary for an hour-of-day rule, the next validity edge of
a candidate item, `inf` when nothing depends on the clock); the memo keeps an answer until then, or
`max_age_s` at most — and never gives it for an instant before it was decided (a clock stepped
back, or a request "as of" an earlier time). Snapshot versions are not part of the keys: the memo
is cleared when the world changes, and an answer decided on an older world is never put.

Memory is bounded by two generations of at most `max_entries / 2` entries each: new entries go to
the young one; when it is full it becomes the old one and the previous old one is dropped. A hit
in the old generation moves to the young one, so entries in use survive — an LRU approximation
with O(1) work and no per-entry bookkeeping on a hit.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class AnswerMemo(Generic[V]):
    __slots__ = ("_half", "_old", "_young", "enabled", "hits", "max_age_s", "misses")

    def __init__(self, max_age_s: float, max_entries: int) -> None:
        self.max_age_s = max_age_s
        self.enabled = max_age_s > 0 and max_entries > 1
        self._half = max(max_entries // 2, 1)
        # key → (valid from, valid until, answer)
        self._young: dict[Hashable, tuple[float, float, V]] = {}
        self._old: dict[Hashable, tuple[float, float, V]] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, now: float) -> V | None:
        """The answer remembered under `key`, if it is still valid at `now` (None when the memo
        is disabled: it is always empty)."""
        entry = self._young.get(key)
        if entry is None:
            entry = self._old.pop(key, None)
            if entry is None:
                self.misses += 1
                return None
            self._keep(key, entry)
        if not entry[0] <= now < entry[1]:
            self.misses += 1
            return None
        self.hits += 1
        return entry[2]

    def put(self, key: Hashable, value: V, now: float, expires: float) -> None:
        """Remember `value`, decided at `now`, until `expires` (or `max_age_s` from `now`,
        whichever is sooner)."""
        if self.enabled and expires > now:
            self._keep(key, (now, min(expires, now + self.max_age_s), value))

    def _keep(self, key: Hashable, entry: tuple[float, float, V]) -> None:
        young = self._young
        if len(young) >= self._half:
            self._old = young
            self._young = young = {}
        young[key] = entry

    def clear(self) -> None:
        self._young = {}
        self._old = {}

    def __len__(self) -> int:
        return len(self._young) + len(self._old)
