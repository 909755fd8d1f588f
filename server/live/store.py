"""The node-local live store: one writable LMDB environment under DATA/live/, for all workers.

Layout (named databases, msgpack values via msgspec):

- ``visitors``: live key → `Activity` (recent views/purchases, cart, decayed category counters,
  consent, a per-visitor update counter, an expiry). Bounded lists, bounded counters.
- ``arms``: ``experiment\\0arm`` → `ArmCount` (successes, trials) for bandits.
- ``frozen``: ``experiment\\0window`` → the arm counts frozen for one bandit window, so every
  worker computes the same weights.
- ``fired``: ``action\\0key`` → last fire time, to fire a webhook once per visitor per window
  across workers.
- ``positions``: stream name → the last broker sequence applied (server/fleet/), written in the
  same transaction as the events it covers, so a replayed message is never applied twice.

Beside them, ``stamps.bin`` (`server.live.stamps`): a shared-memory counter per hash slot of live
keys, changed after every write or delete of a key's record. The hot routes' answer memo reads only
this (one index operation) to know whether a memoised answer is still current for the visitor, and
a zero slot lets `read` skip LMDB for visitors that never sent an event.

Every process opens the environment itself, after the fork, with ``lock=True`` (SPEC §10). Reads
are one short ``begin(buffers=True)`` transaction decoded in place; writes come in batches from a
background task, never from a request.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from zlib import crc32

import lmdb
import msgspec

from .stamps import StampTable

log = logging.getLogger("edgeside.live")

_FIRED = struct.Struct(">d")


class Activity(msgspec.Struct, array_like=True, omit_defaults=True):
    """What a visitor just did; satisfies `rules.ActivityLike` as it is."""

    updated: float = 0.0
    expires: float = 0.0
    seq: int = 0  # this record's update counter (the memo uses the stamp table instead)
    views: list[str] = msgspec.field(default_factory=list)
    purchases: list[str] = msgspec.field(default_factory=list)
    cart: list[str] = msgspec.field(default_factory=list)
    categories: dict[str, float] = msgspec.field(default_factory=dict)
    # None: no consent event seen; False: withdrawn (decide as non-personalised).
    consent: bool | None = None
    # Event times (not arrival times) of the newest consent change and the newest withdrawal:
    # with events from several nodes arriving out of order, an older consent change never
    # overrides a newer one, and nothing that happened before a withdrawal is recorded after it.
    consent_ts: float = 0.0
    withdrawn_ts: float = 0.0


class ArmCount(msgspec.Struct, array_like=True):
    successes: int = 0
    trials: int = 0


class Change(msgspec.Struct, frozen=True):
    """One accepted event, reduced to what the store applies (built off the request path)."""

    key: str
    type: str
    ts: float
    content_id: str | None = None
    category: str | None = None
    experiment: str | None = None
    arm: str | None = None
    consent: bool | None = None


class LiveLimits(msgspec.Struct, frozen=True):
    ttl_s: float = 7 * 24 * 3600.0
    max_list: int = 50
    max_categories: int = 50
    half_life_s: float = 24 * 3600.0
    max_visitors: int = 1_000_000
    # The byte budget, as shares of the map (docs/live.md "Byte budget"): ordinary events are
    # written while the store's pages stay under `high_water`; above it the oldest visitors are
    # evicted down to `low_water` first. Withdrawals of consent may use the room up to
    # `withdrawal_water`; what is left above it is for the deletes of eviction itself (a delete
    # copies pages too in LMDB, so a map filled to the last page could never be emptied).
    high_water: float = 0.80
    low_water: float = 0.65
    withdrawal_water: float = 0.95
    # Visitors read per eviction round (one write transaction): the older half of them go.
    evict_sample: int = 2048


class Written(msgspec.Struct):
    """What `LiveStore.write` did with a batch."""

    applied: int = 0
    evicted: int = 0
    # Withdrawn visitors' records evicted: only when nothing else was left to evict.
    evicted_withdrawn: int = 0
    # Indices (into the batch) of the changes that could not be stored, room made or not.
    lost: list[int] = msgspec.field(default_factory=list)


class _OverBudget(Exception):
    """A write transaction would leave the store over its budget: aborted, room is made first."""


# Changes per write transaction of ordinary events: a whole drain batch, so a batch costs one
# commit (one fsync) as before the budget; a transaction that would cross the high water is
# aborted, room made, and retried — halved when its growth alone exceeds the room (small maps).
_CHUNK = 5000


_decode_activity = msgspec.msgpack.Decoder(Activity).decode
_decode_arm = msgspec.msgpack.Decoder(ArmCount).decode
_decode_frozen = msgspec.msgpack.Decoder(dict[str, tuple[int, int]]).decode
_encode = msgspec.msgpack.Encoder().encode


def _push(items: list[str], value: str, limit: int) -> None:
    """Most recent first, no duplicates, at most `limit` long."""
    if value in items:
        items.remove(value)
    items.insert(0, value)
    del items[limit:]


class LiveStore:
    """One process's handle on the shared environment."""

    def __init__(
        self,
        path: Path,
        map_size: int,
        limits: LiveLimits | None = None,
        *,
        stamp_slots: int = 1 << 20,
    ) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.map_size = map_size
        self.limits = limits or LiveLimits()
        self.env = lmdb.open(
            str(path),
            map_size=map_size,
            max_dbs=8,
            lock=True,
            readahead=False,
            max_readers=512,
            max_spare_txns=4,
        )
        try:
            self._visitors = self.env.open_db(b"visitors")
            self._arms = self.env.open_db(b"arms")
            self._frozen = self.env.open_db(b"frozen")
            self._fired = self.env.open_db(b"fired")
            self._positions = self.env.open_db(b"positions")
            self._dbs = (
                self.env.open_db(None),  # the main database: the named databases' records
                self._visitors,
                self._arms,
                self._frozen,
                self._fired,
                self._positions,
            )
            self.stamps = StampTable(path, stamp_slots, self._keys)
        except BaseException:
            self.env.close()
            raise
        self._drop_legacy_stamps()
        self._resume = b""  # where the next sweep of this process starts
        self._evict_from = b""  # where the next eviction round of this process starts

    def close(self) -> None:
        self.stamps.close()
        self.env.close()

    def _keys(self) -> Iterator[bytes]:
        """Every key with an activity record, expired or not (to build the stamp table)."""
        with self.env.begin(db=self._visitors) as txn:
            yield from txn.cursor().iternext(keys=True, values=False)

    def _drop_legacy_stamps(self) -> None:
        """Remove the ``stamps`` database of earlier versions (the stamp table replaced it)."""
        try:
            with self.env.begin() as txn:
                self.env.open_db(b"stamps", txn=txn, create=False)
        except lmdb.NotFoundError:
            return
        try:
            with self.env.begin(write=True) as wtxn:
                wtxn.drop(self.env.open_db(b"stamps", txn=wtxn, create=False), delete=True)
        except lmdb.Error as exc:  # only space is lost: try again at the next start
            log.warning("live store %s: legacy stamps database not dropped: %s", self.path, exc)
            return
        log.info("live store %s: dropped the legacy stamps database", self.path)

    # -- reads (hot path) -----------------------------------------------------------------------

    def read(self, key: str, now: float) -> tuple[Activity | None, int]:
        """(the visitor's live activity or None when absent/expired, its stamp): the stamp is
        read first, so it is never newer than the activity; a zero stamp means no record and no
        transaction; otherwise one short transaction, decoded from LMDB's buffer."""
        kb = key.encode()
        table = self.stamps
        stamp: int = table.slots[crc32(kb) & table.mask]
        if not stamp:
            return None, 0
        with self.env.begin(db=self._visitors, buffers=True) as txn:
            raw = txn.get(kb)
            if raw is None:
                return None, stamp  # a key sharing the slot has a record
            found = _decode_activity(raw)
        return (found if found.expires > now else None), stamp

    def stamp(self, key: str) -> int:
        """The visitor's stamp: changes whenever the visitor's record is written or deleted (and
        when a key sharing its slot is); 0 only when the visitor has no record. One index
        operation into shared memory: cheap enough for every memo hit."""
        table = self.stamps
        return table.slots[crc32(key.encode()) & table.mask]

    def maybe_active(self, key: str) -> bool:
        """False when the visitor certainly has no live activity record (`read` would find none)."""
        table = self.stamps
        return table.slots[crc32(key.encode()) & table.mask] != 0

    def arm_counts(self, experiment: str) -> dict[str, tuple[int, int]]:
        prefix = experiment.encode() + b"\0"
        out: dict[str, tuple[int, int]] = {}
        with self.env.begin(db=self._arms, buffers=True) as txn:
            cursor = txn.cursor()
            if cursor.set_range(prefix):
                for k, v in cursor:
                    kb = bytes(k)
                    if not kb.startswith(prefix):
                        break
                    c = _decode_arm(v)
                    out[kb[len(prefix) :].decode()] = (c.successes, c.trials)
        return out

    def frozen_counts(self, experiment: str, window: int) -> dict[str, tuple[int, int]]:
        """The arm counts as they were when the first worker asked in this window.

        Workers read counts at different moments; freezing them once per window (the first
        writer wins inside LMDB's write lock) is what makes every worker compute equal weights.
        """
        key = f"{experiment}\0{window}".encode()
        with self.env.begin(db=self._frozen, buffers=True) as txn:
            raw = txn.get(key)
            if raw is not None:
                return dict(_decode_frozen(raw))
        counts = self.arm_counts(experiment)
        with self.env.begin(db=self._frozen, write=True) as wtxn:
            first = wtxn.get(key)
            if first is not None:
                return dict(_decode_frozen(first))
            wtxn.put(key, _encode(counts))
        return counts

    def experiments(self, limit: int = 1000) -> list[str]:
        """The experiments with arm counts (server/fleet/ agrees their frozen counts fleet-wide)."""
        seen: dict[str, None] = {}
        with self.env.begin(db=self._arms) as txn:
            for k in txn.cursor().iternext(keys=True, values=False):
                seen[bytes(k).split(b"\0", 1)[0].decode()] = None
                if len(seen) >= limit:
                    break
        return list(seen)

    def freeze(
        self, experiment: str, window: int, counts: dict[str, tuple[int, int]]
    ) -> dict[str, tuple[int, int]]:
        """Freeze `counts` for a window unless it is frozen already (first writer wins); returns
        what is frozen. The fleet freezes a window before it starts with counts all nodes agreed."""
        key = f"{experiment}\0{window}".encode()
        with self.env.begin(db=self._frozen, write=True) as wtxn:
            first = wtxn.get(key)
            if first is not None:
                return dict(_decode_frozen(first))
            wtxn.put(key, _encode(counts))
        return counts

    # -- writes (background) --------------------------------------------------------------------

    def position(self, stream: str) -> int:
        """The last broker sequence of `stream` applied here (0: none)."""
        with self.env.begin(db=self._positions) as txn:
            raw = txn.get(stream.encode())
        return int(raw) if raw is not None else 0

    def apply(
        self, changes: Sequence[Change], now: float, position: tuple[str, int] | None = None
    ) -> int:
        """Apply a batch within the byte budget (`write`); returns how many changed something."""
        return self.write(changes, now, position).applied

    def write(
        self, changes: Sequence[Change], now: float, position: tuple[str, int] | None = None
    ) -> Written:
        """Apply a batch within the byte budget, making room by eviction when needed.

        Withdrawals of consent go first, in their own transaction (one by one if that fails), up
        to `withdrawal_water`: a flood of ordinary events can never crowd one out, nor make a
        batch of them all-or-nothing (issue 14, defect 4). Then the ordinary events, in
        transactions of `_CHUNK`, each kept under `high_water`: over it, the oldest visitors are
        evicted down to `low_water` and the chunk is tried again (halved, down to one change,
        when it still does not fit). What cannot be stored is in `Written.lost`, never an
        exception for a full map.

        `position` (stream, sequence) is recorded with the last ordinary chunk, so after a crash
        the batch is either applied and its position known, or neither (a replayed withdrawal is
        idempotent).
        """
        out = Written()
        limits = self.limits
        withdrawals = [
            i for i, ch in enumerate(changes) if ch.type == "consent" and ch.consent is False
        ]
        first = set(withdrawals)
        rest = [i for i in range(len(changes)) if i not in first]
        if withdrawals:
            self._write_room(changes, withdrawals, now, None, limits.withdrawal_water, out, True)
        if not rest and position is not None:
            self._write_room(changes, [], now, position, 1.0, out, False)
        for start in range(0, len(rest), _CHUNK):
            part = rest[start : start + _CHUNK]
            last = start + _CHUNK >= len(rest)
            self._write_room(
                changes, part, now, position if last else None, limits.high_water, out, False
            )
        return out

    def _write_room(
        self,
        changes: Sequence[Change],
        part: list[int],
        now: float,
        position: tuple[str, int] | None,
        water: float,
        out: Written,
        withdrawing: bool,
    ) -> None:
        """Write `part` of `changes` under `water` of the map: make room and retry, then halve."""
        limits = self.limits
        cap = int(self.map_size * water)
        made = 0
        for attempt in range(2):
            if attempt:
                made = self._make_room(now, int(self.map_size * limits.low_water), out, withdrawing)
            try:
                out.applied += self._apply_txn([changes[i] for i in part], now, position, cap)
                return
            except (_OverBudget, lmdb.MapFullError):
                continue
        # Halve when there is room (eviction freed some, or the store is under its low water):
        # the part is just bigger than the room. With nothing left to evict and no room, halving
        # would only repeat fruitless passes over the store: the part is lost, counted.
        room = made > 0 or self.used_bytes() <= int(self.map_size * limits.low_water)
        if len(part) > 1 and room:
            half = len(part) // 2
            self._write_room(changes, part[:half], now, None, water, out, withdrawing)
            self._write_room(changes, part[half:], now, position, water, out, withdrawing)
            return
        out.lost.extend(part)
        if position is not None:  # the stream moves on even past an event that found no room
            self._apply_txn([], now, position, None)

    def _make_room(self, now: float, target: int, out: Written, withdrawing: bool) -> int:
        evicted, withdrawn = self.evict(now, target, withdrawn_too=withdrawing)
        out.evicted += evicted
        out.evicted_withdrawn += withdrawn
        return evicted

    def used_bytes(self, txn: lmdb.Transaction | None = None) -> int:
        """The bytes of the pages the store's databases hold (not LMDB's free list)."""
        if txn is None:
            with self.env.begin() as rtxn:
                return self.used_bytes(rtxn)
        pages = 0
        psize = 4096
        for db in self._dbs:
            st = txn.stat(db)
            psize = st["psize"]
            pages += st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
        return int(pages * psize)

    def evict(self, now: float, target: int, *, withdrawn_too: bool = False) -> tuple[int, int]:
        """Delete visitors until the store's pages are under `target` bytes: (evicted, of which
        withdrawn). Expired records first, then the older half of each sample of
        `evict_sample` records read from where the last round stopped (an approximation of
        oldest-first that costs one bounded transaction per round, never a scan of the store).
        Records of withdrawn consent are kept — the refusal must outlive the flood — unless
        `withdrawn_too` and nothing else is left: then the oldest refusals go, counted.
        """
        evicted = withdrawn = 0
        sample = max(2, self.limits.evict_sample)
        idle = 0
        while True:
            gone: list[bytes] = []
            try:
                with self.env.begin(write=True) as txn:
                    if self.used_bytes(txn) <= target:
                        break
                    dead: list[bytes] = []
                    alive: list[tuple[float, bytes]] = []
                    refused: list[tuple[float, bytes]] = []
                    cursor = txn.cursor(db=self._visitors)
                    at = cursor.set_range(self._evict_from) if self._evict_from else cursor.first()
                    if not at:
                        at = cursor.first()
                    self._evict_from = b""
                    while at and len(dead) + len(alive) + len(refused) < sample:
                        k, v = cursor.item()
                        rec = _decode_activity(v)
                        if rec.expires <= now:
                            dead.append(bytes(k))
                        elif rec.consent is False:
                            refused.append((rec.updated, bytes(k)))
                        else:
                            alive.append((rec.updated, bytes(k)))
                        at = cursor.next()
                    if at:
                        self._evict_from = bytes(cursor.key())
                    alive.sort()
                    gone = dead + [k for _, k in alive[: (len(alive) + 1) // 2]]
                    if not gone and withdrawn_too and refused:
                        refused.sort()
                        gone = [k for _, k in refused[: max(1, len(refused) // 2)]]
                        withdrawn += len(gone)
                    for k in gone:
                        txn.delete(k, db=self._visitors)
            except lmdb.Error as exc:  # even the deletes found no page: counted by the caller
                log.error("live store %s: eviction stopped: %s", self.path, exc)
                break
            if gone:
                self.stamps.bump(gone)  # after the commit, as in `apply`
                evicted += len(gone)
                idle = 0
            else:
                idle += 1
                entries = self.count()
                # A whole pass over the store found nothing it may evict: stop.
                if idle > entries // sample + 1:
                    break
        return evicted, withdrawn

    def _apply_txn(
        self,
        changes: Sequence[Change],
        now: float,
        position: tuple[str, int] | None,
        cap: int | None,
    ) -> int:
        """Apply `changes` in one write transaction, aborted (`_OverBudget`) when it would leave
        the store's pages over `cap` bytes."""
        limits = self.limits
        applied = 0
        keys = [k.encode() for k in dict.fromkeys(ch.key for ch in changes)]
        self.stamps.reserve(keys)  # before the transaction: a record never has a zero stamp
        with self.env.begin(write=True) as txn:
            if position is not None:
                txn.put(position[0].encode(), b"%d" % position[1], db=self._positions)
            cache: dict[str, Activity] = {}
            for ch in changes:
                if ch.experiment and ch.arm and ch.type in ("view", "click", "purchase"):
                    self._count_arm(txn, ch)
                rec = cache.get(ch.key)
                if rec is None:
                    raw = txn.get(ch.key.encode(), db=self._visitors)
                    rec = _decode_activity(raw) if raw is not None else Activity()
                    if rec.expires <= now:
                        rec = Activity(
                            consent=rec.consent,
                            consent_ts=rec.consent_ts,
                            withdrawn_ts=rec.withdrawn_ts,
                        )
                    cache[ch.key] = rec
                if ch.type == "consent":
                    if ch.ts < rec.consent_ts:
                        continue  # older news than the consent change already applied
                    if ch.consent is False:
                        # Withdrawal: forget what was recorded, keep only the refusal.
                        rec.views, rec.purchases, rec.cart, rec.categories = [], [], [], {}
                        rec.withdrawn_ts = ch.ts
                    rec.consent = ch.consent
                    rec.consent_ts = ch.ts
                elif rec.consent is False or (rec.withdrawn_ts and ch.ts <= rec.withdrawn_ts):
                    # Nothing is recorded about a visitor who withdrew consent, nor anything
                    # that happened before a withdrawal and arrived after it (another node).
                    continue
                else:
                    self._apply_one(rec, ch, limits)
                rec.seq += 1
                rec.updated = now
                rec.expires = now + limits.ttl_s
                applied += 1
            for key, rec in cache.items():
                txn.put(key.encode(), _encode(rec), db=self._visitors)
            if cap is not None and self.used_bytes(txn) > cap:
                raise _OverBudget  # leaving the `with` aborts the transaction
        self.stamps.bump(keys)  # after the commit: a new stamp always comes with the new record
        return applied

    def _apply_one(self, rec: Activity, ch: Change, limits: LiveLimits) -> None:
        cid = ch.content_id
        if ch.type == "view" and cid:
            _push(rec.views, cid, limits.max_list)
        elif ch.type == "add_to_cart" and cid:
            _push(rec.cart, cid, limits.max_list)
        elif ch.type == "purchase":
            if cid:
                _push(rec.purchases, cid, limits.max_list)
                if cid in rec.cart:
                    rec.cart.remove(cid)
            else:
                rec.cart.clear()  # a checkout without an item id buys the whole cart
        if ch.category:
            # Exponential decay to the event's time, then +1: recent interest weighs more.
            age = max(0.0, ch.ts - rec.updated) if rec.updated else 0.0
            factor = 0.5 ** (age / limits.half_life_s) if limits.half_life_s > 0 else 1.0
            cats = {k: round(v * factor, 6) for k, v in rec.categories.items() if v * factor > 0.01}
            cats[ch.category] = cats.get(ch.category, 0.0) + 1.0
            if len(cats) > limits.max_categories:
                cats = dict(sorted(cats.items(), key=lambda kv: -kv[1])[: limits.max_categories])
            rec.categories = cats

    def _count_arm(self, txn: lmdb.Transaction, ch: Change) -> None:
        key = f"{ch.experiment}\0{ch.arm}".encode()
        raw = txn.get(key, db=self._arms)
        c = _decode_arm(raw) if raw is not None else ArmCount()
        if ch.type == "view":
            c.trials += 1
        else:
            c.successes += 1
        txn.put(key, _encode(c), db=self._arms)

    def claim(self, action: str, key: str, window_s: float, now: float) -> bool:
        """True for the first caller per (action, visitor) per window, across all workers."""
        k = f"{action}\0{key}".encode()
        with self.env.begin(db=self._fired, write=True) as txn:
            raw = txn.get(k)
            if raw is not None and now - _FIRED.unpack(raw)[0] < window_s:
                return False
            txn.put(k, _FIRED.pack(now))
        return True

    def sweep(self, now: float, budget: int = 200_000) -> int:
        """Delete expired visitors, then the oldest beyond `max_visitors`, then evict when the
        store is over its byte budget.

        Bounded work per call: at most `budget` entries are read, starting where the previous
        call of this process stopped (wrapping around), so every entry is visited in turn and a
        write transaction is never held for a whole large store.
        """
        with self.env.begin(write=True) as txn:
            entries: int = txn.stat(self._visitors)["entries"]
            live: list[tuple[float, bytes]] = []
            dead: list[bytes] = []
            cursor = txn.cursor(db=self._visitors)
            positioned = cursor.set_range(self._resume) if self._resume else cursor.first()
            if not positioned:
                positioned = cursor.first()
            self._resume = b""
            # Collect first, delete after: a cursor's position is undefined after a delete.
            while positioned:
                k, v = cursor.item()
                rec = _decode_activity(v)
                if rec.expires <= now:
                    dead.append(bytes(k))
                else:
                    live.append((rec.updated, bytes(k)))
                positioned = cursor.next()
                if len(dead) + len(live) >= budget:
                    if positioned:
                        self._resume = bytes(cursor.key())
                    break
            extra = entries - len(dead) - self.limits.max_visitors
            if extra > 0:
                live.sort()
                dead.extend(k for _, k in live[:extra])
            for k in dead:
                txn.delete(k, db=self._visitors)
            stale = [
                bytes(k)
                for i, (k, v) in enumerate(txn.cursor(db=self._fired))
                if i < budget and now - _FIRED.unpack(v)[0] > 86400.0
            ]
            for k in stale:
                txn.delete(k, db=self._fired)
        self.stamps.bump(dead)  # after the commit, as in `apply`
        evicted = 0
        limits = self.limits
        if self.used_bytes() > self.map_size * limits.high_water:
            # The byte budget, not only the count: writes evict too, but a quiet node's store
            # comes back under budget here without waiting for its next event.
            evicted, _ = self.evict(now, int(self.map_size * limits.low_water))
        return len(dead) + evicted

    def count(self) -> int:
        with self.env.begin(db=self._visitors) as txn:
            entries: int = txn.stat(self._visitors)["entries"]
            return entries


def open_store(
    data_dir: str, subdir: str, map_size: int, limits: LiveLimits, stamp_slots: int = 1 << 20
) -> LiveStore | None:
    """The store under DATA/<subdir>, or None when it cannot be opened (decisions go on without)."""
    path = Path(subdir) if os.path.isabs(subdir) else Path(data_dir or ".") / subdir
    try:
        return LiveStore(path, map_size, limits, stamp_slots=stamp_slots)
    except (lmdb.Error, OSError) as exc:
        log.error("live store %s unavailable, deciding without live activity: %s", path, exc)
        return None
