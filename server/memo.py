"""A short-lived memo of answers, keyed by every input that can change them.

A proxy asks the same question many times a second (the same returning visitor, the same anonymous
context), and a decision is a pure function of its inputs, the snapshot versions and the clock. So
an answer may be reused for at most `ttl` seconds — the staleness a time-based rule (hour, validity
window) can see — and only under a key holding all the request's inputs and the versions.

Entries live in one dict per time slot; a new slot starts with an empty dict, which bounds both age
and memory without a per-entry expiry check.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class SlotMemo(Generic[V]):
    def __init__(self, ttl_s: float, max_entries: int) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.enabled = ttl_s > 0 and max_entries > 0
        self._slot = -1
        self._entries: dict[Hashable, V] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, now: float) -> V | None:
        slot = int(now / self.ttl_s)
        if slot != self._slot:
            self._slot = slot
            self._entries = {}
            self.misses += 1
            return None
        value = self._entries.get(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put(self, key: Hashable, value: V) -> None:
        if len(self._entries) < self.max_entries:
            self._entries[key] = value
