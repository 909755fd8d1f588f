"""A bounded memo of answers, each kept until the moment it could change.

A proxy asks the same question many times a second (the same returning visitor, the same anonymous
context), and a decision is a pure function of its inputs, the snapshot versions, the visitor's
live activity and the clock. The rules engine says until when a decision stays exactly what it is
(`rules.Decision.expires`: the next hour boundary for an hour-of-day rule, the next validity edge of
a candidate item, `inf` when nothing depends on the clock); the memo keeps an answer until then, or
`max_age_s` at most — and never gives it for an instant before it was decided (a clock stepped
back, or a request "as of" an earlier time). Snapshot versions are not part of the keys: the memo
is cleared when the world changes, and an answer decided on an older world is never put.

Memory is bounded by two generations of at most `max_entries / 2` entries and `max_bytes / 2`
bytes each: new entries go to the young one; when it is full (either bound) it becomes the old one
and the previous old one is dropped. A hit in the old generation moves to the young one, so
entries in use survive — an LRU approximation with O(1) work and no per-entry bookkeeping on a
hit. An entry's bytes are what its caller says it holds (`put`'s `size`: the key's bytes and what
the answer owns, not what it shares with other entries); `ENTRY_BYTES` by default. Bounded in
entries alone, 50 000 keys of up to 4 KB were ~385 MB per memo per worker (issue 14, defect 4).

Past `keep_first` entries (512 by default), an answer is kept at first sight only while the memo
pays — at least `PAYING` of its last `WINDOW` lookups hit; otherwise only when its key is put a
second time (the first `put` of a key only notes its hash). On a realistic load almost every
question is asked once (a new visitor, page or city: 0 % edge hits in bench.http, and the decision
memo ~1 %, ~30 % since it keys strangers without the path), and keeping each answer anyway held
~18 objects per request that the cyclic garbage collector walks: full collections over ~1 M
objects, event-loop stalls of 380 ms (issue 15 item 4). A memo whose hits are only the repeated
questions loses little to the doorkeeper (decision memo 31 % → 30 %). On the repeats load (70-90 %
hits) every answer is kept at once, as before: there a second miss per question cost more CPU
than the entries cost the collector. While the memo is small every
answer is kept at once. The noted hashes are ints in plain dicts, which the collector does not
track; they are bounded like the entries (two generations of `max_entries / 2`), and a hash
collision only admits an answer early — an answer is still given back only under its whole key.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")

# Past `keep_first` entries, answers are kept at first sight while at least this share of the
# memo's last `WINDOW` lookups hit (see the module's docstring).
PAYING = 0.5
WINDOW = 1024

# What an entry holds besides its key's bytes, roughly: the dict slot, the entry tuple, the key
# tuple and its items' object headers, the answer's own small objects.
ENTRY_BYTES = 512


class AnswerMemo(Generic[V]):
    __slots__ = (
        "_half",
        "_half_bytes",
        "_old",
        "_old_bytes",
        "_old_seen",
        "_paying",
        "_window",
        "_young",
        "_young_bytes",
        "_young_seen",
        "enabled",
        "hits",
        "keep_first",
        "max_age_s",
        "misses",
    )

    def __init__(
        self,
        max_age_s: float,
        max_entries: int,
        max_bytes: int = 64 << 20,
        keep_first: int = 512,
    ) -> None:
        self.max_age_s = max_age_s
        self.enabled = max_age_s > 0 and max_entries > 1 and max_bytes > 2 * ENTRY_BYTES
        self._half = max(max_entries // 2, 1)
        self._half_bytes = max(max_bytes // 2, 1)
        # key → (valid from, valid until, answer, bytes it holds)
        self._young: dict[Hashable, tuple[float, float, V, int]] = {}
        self._old: dict[Hashable, tuple[float, float, V, int]] = {}
        self._young_bytes = 0
        self._old_bytes = 0
        self.keep_first = keep_first
        # Hashes of keys put once and not kept (see the module's docstring): untracked by the GC.
        self._young_seen: dict[int, None] = {}
        self._old_seen: dict[int, None] = {}
        # Whether the memo paid over its last full window of lookups, and where that window began.
        self._paying = False
        self._window = (0, 0)  # (hits, lookups) when it began
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
            self._old_bytes -= entry[3]
            self._keep(key, entry)
        if not entry[0] <= now < entry[1]:
            self.misses += 1
            return None
        self.hits += 1
        return entry[2]

    def put(
        self, key: Hashable, value: V, now: float, expires: float, size: int = ENTRY_BYTES
    ) -> None:
        """Remember `value`, decided at `now`, until `expires` (or `max_age_s` from `now`,
        whichever is sooner); the entry holds `size` bytes (its key's and the answer's own). One
        over a generation's byte budget is not kept, nor, past `keep_first` entries, one whose key
        was not put before."""
        if not (self.enabled and expires > now and size <= self._half_bytes):
            return
        if len(self) >= self.keep_first and not self._pays() and not self._seen_before(key):
            return
        self._keep(key, (now, min(expires, now + self.max_age_s), value, size))

    def _pays(self) -> bool:
        """Whether at least `PAYING` of the lookups in the last whole `WINDOW` hit."""
        hits, lookups = self.hits, self.hits + self.misses
        since_hits, since = self._window
        if lookups - since >= WINDOW:
            self._paying = hits - since_hits >= PAYING * (lookups - since)
            self._window = (hits, lookups)
        return self._paying

    def _seen_before(self, key: Hashable) -> bool:
        """Whether `key` was put before: it is in the memo (an answer that expired), or its hash
        was noted (and it is noted now, if not)."""
        digest = hash(key)
        if digest in self._young_seen or digest in self._old_seen:
            return True
        if key in self._young or key in self._old:
            return True
        if len(self._young_seen) >= self._half:
            self._old_seen = self._young_seen
            self._young_seen = {}
        self._young_seen[digest] = None
        return False

    def _keep(self, key: Hashable, entry: tuple[float, float, V, int]) -> None:
        young = self._young
        replaced = young.get(key)
        if replaced is not None:
            self._young_bytes -= replaced[3]
        elif len(young) >= self._half or self._young_bytes + entry[3] > self._half_bytes:
            self._old, self._old_bytes = young, self._young_bytes
            self._young = young = {}
            self._young_bytes = 0
        young[key] = entry
        self._young_bytes += entry[3]

    @property
    def bytes(self) -> int:
        """What the entries hold, by their `size`s."""
        return self._young_bytes + self._old_bytes

    def clear(self) -> None:
        self._young = {}
        self._old = {}
        self._young_seen = {}
        self._old_seen = {}
        self._young_bytes = self._old_bytes = 0

    def __len__(self) -> int:
        return len(self._young) + len(self._old)
