"""Merging persons into profile values on every core.

The engine cuts the persons — one row per person: canonical id, the records' payloads (input
order), the identifier keys (first-seen order) — in canonical-id order, a group at a time
(`persons_file.person_groups`). Each group is one task: a worker process is handed the group
(an Arrow IPC file it maps and removes), merges every person by policy and returns the
(key, value) pairs, and the parent hands them to the LMDB writer in group order, so the keys
stay sorted for append writes. Merging is Python (the policies are exactly `merge.Merger`'s),
so processes, not threads, are what use a second core. A bounded number of groups is in
flight, so memory does not grow with the number of people, and the workers merge the first
groups while the parent cuts the next ones.

Where a merge phase's time goes (1 M people, 2 workers, CPU seconds; issue 17): the workers
are busy the whole phase (wall ≈ their CPU / 2), the parent's share — unpickling the pairs and
LMDB's appends — is about a tenth of theirs, and pickling a group's pairs about 3 % of a
worker's. So the work is in the worker's Python per person: decoding, merging, encoding, which
`GroupMerger` keeps to the least (37 → 22 CPU s from Parquet, 44 → 30 from NDJSON). Shared
memory or workers writing their own sorted runs would save only the parent's tenth.

Counted by valgrind (session 12, the bench's data, ~65 k instructions a person from Parquet
after `flat.GroupDecoder` stopped counting marks with `bytes.count` and copying the payloads
four times): the compiled merge of the half of persons with several records is about a third
(~39 k a such person: every line is CPython bytecode already near its least, and `dict.get`
forms of its loops count more), msgspec decoding a sixth, making the `ids` maps 8 %, encoding
and the allocator most of the rest. Returning a group's pairs as two blobs and their ends
instead of a list of pairs (tried) saved nothing measurable: pickling bytes is cheap. Nor
did encoding the `ids` maps of a slice at once with numpy and embedding them as msgspec.Raw
(tried: 1.6 µs a person against 1.05 for building and encoding the dicts; a Raw alone costs
~0.25 µs).
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import msgspec

from snapshots.config import ProfilesConfig
from snapshots.errors import BuildFailed
from snapshots.flat import GroupDecoder
from snapshots.identity import Assembler
from snapshots.merge import FlatMerger
from snapshots.model import Profile
from snapshots.stitching import canonical_digests

T = TypeVar("T")

Pairs = list[tuple[bytes, bytes]]
# Persons decoded at a time: one msgspec call each, and only their records alive at once (a
# whole 16 k-person group's records would double a worker's memory). 512 rather than 2048: the
# records of a slice then stay in a core's cache while they are merged (two workers, 1 M
# Parquet persons: workers' CPU 3-11 % lower in five alternated pairs; 256 is no better).
SLICE = 512


class GroupMerger:
    """One group of persons → its profiles' (key, value) pairs: the bytes
    `identity.Assembler.value` gives for each person, made with the least Python per person —
    every payload of the group decoded in one call (`flat.GroupDecoder`), a one-record person
    encoded straight from its record, the others merged by `merge.FlatMerger`."""

    def __init__(self, cfg: ProfilesConfig) -> None:
        self._reference = Assembler(cfg)
        self._decode = GroupDecoder().decode
        self._many = FlatMerger(cfg).merge
        self._encode = msgspec.msgpack.Encoder().encode

    def pairs(self, table: Any) -> Pairs:
        cids: list[str] = table.column(0).to_pylist()
        col = table.column(1).combine_chunks()
        offsets: list[int] = col.offsets.to_pylist()
        values = col.flatten()  # from offsets[0]: a sliced list array's offsets start past 0
        keys: list[list[str]] = table.column(2).to_pylist()
        out: Pairs = []
        for s in range(0, len(cids), SLICE):
            e = min(s + SLICE, len(cids))
            first = offsets[s] - offsets[0]
            part = values.slice(first, offsets[e] - offsets[s])
            self._slice(
                out, cids[s:e], keys[s:e], [o - offsets[s] for o in offsets[s : e + 1]], part
            )
        return out

    def _slice(
        self, out: Pairs, cids: list[str], keys: list[list[str]], offsets: list[int], values: Any
    ) -> None:
        recs, far = self._decode(values)
        encode, many = self._encode, self._many
        append = out.append
        for cid, ks, a, b in zip(cids, keys, offsets, offsets[1:], strict=False):
            if far and any(a <= i < b for i in far):
                payloads = values[a:b].to_pylist()
                try:
                    append((cid.encode(), self._reference.value(cid, ks, payloads)))
                except OverflowError:
                    raise beyond_64_bits(cid) from None
                continue
            ids: dict[str, list[str]] = {}
            for key in ks:
                t, _, v = key.partition(":")
                if t in ids:
                    ids[t].append(v)
                else:
                    ids[t] = [v]
            if b - a == 1:
                # With one record every policy yields the record's own values (`merge._one`).
                r = recs[a]
                segs = r.segments
                profile = Profile(
                    cid,
                    ids,
                    r.attributes,
                    r.interests,
                    sorted(set(segs)) if len(segs) > 1 else segs,
                    r.counters,
                    r.last_seen,
                    r.updated_at,
                    [r.source],
                )
            else:
                profile = many(cid, ids, recs[a:b])
            try:
                append((cid.encode(), encode(profile)))
            except OverflowError:
                raise beyond_64_bits(cid) from None


def beyond_64_bits(cid: str) -> BuildFailed:
    """A merged integer msgpack cannot hold: inputs are 64-bit (model.StoredInt), so only a
    `sum` can get there."""
    return BuildFailed(
        f"profile {cid}: a merged integer is beyond the 64 bits a snapshot value holds "
        "(a `sum` merge policy adding up large integers); nothing was written"
    )


_merger: GroupMerger | None = None


def _init(cfg_json: bytes) -> None:
    global _merger
    _merger = GroupMerger(msgspec.json.decode(cfg_json, type=ProfilesConfig))


def hand_over(table: Any, path: str) -> str:
    """Write `table` to `path` as an Arrow IPC file for a worker to take (`taken`); return the
    path. Through the pool's pipe instead (pickled, then written and read 64 KB at a time) an
    11 MB group cost ~28 ms of this process's CPU and as much of the worker's, the file ~5 ms
    (measured): ~3 CPU s at 1 M people."""
    import pyarrow as pa

    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    return path


@contextlib.contextmanager
def taken(path: str) -> Iterator[Any]:
    """Worker side: the table `hand_over` wrote, memory-mapped (no copy) for the `with` block;
    the file is removed at once (its pages stay readable until unmapped)."""
    import pyarrow as pa

    with pa.memory_map(path) as m:
        os.unlink(path)
        yield pa.ipc.open_file(m).read_all()


def merge_file(path: str) -> Pairs:
    """Worker side: one group of persons (`hand_over`'s file) → its profiles' pairs."""
    with taken(path) as table:
        return merge_table(table)


def digest_keys(keys: Any) -> bytes:
    """`stitching.canonical_digests` of an Arrow string array (or chunked array) of best keys."""
    import pyarrow as pa

    return canonical_digests(keys.cast(pa.binary()).to_pylist())


def digest_file(path: str) -> bytes:
    """Worker side: `digest_keys` of the one column of `hand_over`'s file."""
    with taken(path) as table:
        return digest_keys(table.column(0))


def merge_table(table: Any) -> Pairs:
    """One group of persons (a table of `persons_file.SCHEMA`) → its profiles' pairs."""
    assert _merger is not None, "merge worker not initialised"
    # A group's objects form no cycles and all die with it: the collector would only walk
    # them, again and again, while they are made (a quarter of the decoding time).
    was = gc.isenabled()
    gc.disable()
    try:
        return _merger.pairs(table)
    finally:
        if was:
            gc.enable()


class MergePool:
    """Worker processes for `merged_groups`, or none (`workers` ≤ 1: merge in this process).

    Created before the engine connects: the workers are forked from a process that has no
    DuckDB threads yet (a fork copies only the calling thread, so a lock another thread held
    would stay locked forever in the child), and fork, unlike spawn, does not re-run the
    caller's main module."""

    def __init__(self, cfg: ProfilesConfig, workers: int, spool: str | None = None) -> None:
        """`spool`: where the directory of tables handed to the workers is made (default: the
        system's temp dir); it holds at most the groups in flight."""
        self.cfg_json = msgspec.json.encode(cfg)
        self.workers = workers
        self._pool: Any = None
        self._spool: str | None = None
        self._handed = 0
        if workers > 1:
            self._spool = tempfile.mkdtemp(prefix="handover-", dir=spool)
            self._pool = multiprocessing.get_context("fork").Pool(
                workers, initializer=_init, initargs=(self.cfg_json,)
            )

    def _hand(self, table: Any) -> tuple[str]:
        assert self._spool is not None
        self._handed += 1
        return (hand_over(table, os.path.join(self._spool, f"{self._handed}.arrow")),)

    def merged_groups(self, groups: Iterable[Any]) -> Iterator[Pairs]:
        """Every group's pairs, in order (`groups`: tables of `persons_file.SCHEMA`, taken as
        the workers need them); at most two groups per worker in flight."""
        if self._pool is None:
            _init(self.cfg_json)
            for t in groups:
                yield merge_table(t)
            return
        yield from self.ordered(merge_file, (self._hand(t) for t in groups))

    def digests(self, keys: Iterable[Any]) -> Iterator[bytes]:
        """`digest_keys` of each of `keys` (Arrow string arrays), in order: by the workers when
        there are some — they are idle while the engine stitches, and blake2b called from
        Python is ~1 µs a key (18 s at 10 M people in one process)."""
        if self._pool is None:
            for k in keys:
                yield digest_keys(k)
            return
        import pyarrow as pa

        yield from self.ordered(digest_file, (self._hand(pa.table({"key": k})) for k in keys))

    @property
    def parallel(self) -> bool:
        """Whether there are worker processes (else work is done in the caller's process)."""
        return self._pool is not None

    def ordered(self, fn: Callable[..., T], calls: Iterable[tuple[Any, ...]]) -> Iterator[T]:
        """`fn(*args)` for each of `calls`, run by the workers and yielded in order, at most two
        per worker in flight so that results waiting to be taken stay bounded. `fn` must be a
        module-level function (the workers import it by name); needs `parallel`."""
        if self._pool is None:
            raise RuntimeError("MergePool.ordered needs worker processes")
        pending: deque[Any] = deque()
        for args in calls:
            pending.append(self._pool.apply_async(fn, args))
            if len(pending) >= 2 * self.workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
        if self._spool is not None:
            shutil.rmtree(self._spool, ignore_errors=True)
            self._spool = None
