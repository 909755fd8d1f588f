"""The stamp table the answer memo checks on every hit: what changes a stamp, what a zero means,
sharing between workers (real processes where it matters), and rebuilding a missing, damaged or
pre-reboot `stamps.bin`."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import time
from collections.abc import Iterator
from pathlib import Path
from zlib import crc32

import lmdb
import pytest

from server.live import stamps
from server.live.stamps import FILE_NAME, HEADER_BYTES, MAGIC, StampTable
from server.live.store import Change, LiveLimits, LiveStore

SPAWN = multiprocessing.get_context("spawn")  # each child opens LMDB itself (SPEC §10)
KEYS = [f"p:k{i}" for i in range(10)]


def view(key: str, ts: float = 100.0, item: str = "x") -> Change:
    return Change(key, "view", ts, content_id=item)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LiveStore]:
    s = LiveStore(tmp_path, 16 << 20, LiveLimits(ttl_s=10.0, max_visitors=100))
    yield s
    s.close()


def test_a_visitor_without_events_reads_zero_and_skips_lmdb(store: LiveStore) -> None:
    assert store.stamp("p:nobody") == 0 and not store.maybe_active("p:nobody")
    assert store.read("p:nobody", 100.0) == (None, 0)
    store.apply([view("p:somebody")], 100.0)
    assert store.stamp("p:somebody") != 0 and store.maybe_active("p:somebody")
    assert store.stamp("p:nobody") == 0 and not store.maybe_active("p:nobody")


def test_every_write_changes_the_stamp_and_read_returns_it(store: LiveStore) -> None:
    seen = []
    for i in range(3):
        store.apply([view("p:a", item=f"c{i}")], 100.0)
        rec, stamp = store.read("p:a", 101.0)
        assert rec is not None and rec.views[0] == f"c{i}"
        assert stamp == store.stamp("p:a") != 0
        seen.append(stamp)
    assert len(set(seen)) == 3
    # A consent withdrawal is a write too (it forgets the activity).
    store.apply([Change("p:a", "consent", 100.0, consent=False)], 100.0)
    assert store.stamp("p:a") not in seen


def test_sweeping_a_visitor_changes_its_stamp(store: LiveStore) -> None:
    store.apply([view("p:old")], 100.0)
    store.apply([view("p:new")], 105.0)
    old, new = store.stamp("p:old"), store.stamp("p:new")
    assert store.sweep(111.0) == 1  # p:old expired (ttl 10 s)
    assert store.stamp("p:old") != old and store.stamp("p:new") == new
    assert store.read("p:old", 111.0) == (None, store.stamp("p:old"))


def test_evicting_beyond_max_visitors_changes_the_stamp(tmp_path: Path) -> None:
    s = LiveStore(tmp_path, 16 << 20, LiveLimits(max_visitors=2))
    try:
        s.apply([view("p:a")], 100.0)
        s.apply([view("p:b"), view("p:c")], 101.0)
        before = {k: s.stamp(k) for k in ("p:a", "p:b", "p:c")}
        assert s.sweep(102.0) == 1
        assert s.stamp("p:a") != before["p:a"]
        assert [s.stamp(k) for k in ("p:b", "p:c")] == [before["p:b"], before["p:c"]]
    finally:
        s.close()


def test_keys_sharing_a_slot_only_cost_a_recomputation(tmp_path: Path) -> None:
    s = LiveStore(tmp_path, 16 << 20, stamp_slots=1)  # every key in one slot
    try:
        s.apply([view("p:a")], 100.0)
        stamp = s.stamp("p:b")
        assert stamp != 0 and s.maybe_active("p:b")  # "maybe": p:b itself has no record
        assert s.read("p:b", 100.0) == (None, stamp)  # the memo compares against this value
        s.apply([view("p:a", item="y")], 100.0)
        assert s.stamp("p:b") != stamp  # p:b's memoised answers are recomputed, harmlessly
    finally:
        s.close()


def test_the_slot_count_must_be_a_power_of_two(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="power of two"):
        LiveStore(tmp_path, 16 << 20, stamp_slots=1000)


def test_close_releases_the_mapping(tmp_path: Path) -> None:
    s = LiveStore(tmp_path, 16 << 20)
    s.apply([view("p:a")], 100.0)
    table = s.stamps
    s.close()
    with pytest.raises(ValueError):  # a released memoryview, not a read of unmapped memory
        s.stamp("p:a")
    table.close()  # idempotent


# -- persistence and rebuilding -------------------------------------------------------------------


def _populate(path: Path, n: int = 200) -> None:
    s = LiveStore(path, 16 << 20)
    try:
        s.apply([view(f"p:v{i}") for i in range(n)], 100.0)
    finally:
        s.close()


def test_the_table_persists_across_restarts(tmp_path: Path) -> None:
    _populate(tmp_path)
    s = LiveStore(tmp_path, 16 << 20)
    try:
        assert not s.stamps.rebuilt
        assert all(s.maybe_active(f"p:v{i}") for i in range(200))
    finally:
        s.close()


@pytest.mark.parametrize(
    "damage",
    ["deleted", "truncated", "too_long", "garbage_header", "other_slot_count", "other_boot"],
)
def test_a_missing_or_unusable_table_is_rebuilt_from_the_store(tmp_path: Path, damage: str) -> None:
    _populate(tmp_path)
    table = tmp_path / FILE_NAME
    slots = 1 << 20
    if damage == "deleted":
        table.unlink()
    elif damage == "truncated":
        os.truncate(table, 1000)
    elif damage == "too_long":
        os.truncate(table, HEADER_BYTES + 8 * slots)
    elif damage == "garbage_header":
        with table.open("r+b") as f:
            f.write(b"\xff" * HEADER_BYTES)
    elif damage == "other_slot_count":
        slots = 1 << 12  # the operator changed the setting: this file is the wrong size
    elif damage == "other_boot":
        with table.open("r+b") as f:
            f.write(stamps._HEADER.pack(MAGIC, slots, b"another-boot"))
    # Zero the slots too (where the file has them), so only a rebuild can make them non-zero.
    if damage in ("garbage_header", "other_boot"):
        with table.open("r+b") as f:
            f.seek(HEADER_BYTES)
            f.write(bytes(4 * slots))
    s = LiveStore(tmp_path, 16 << 20, stamp_slots=slots)
    try:
        assert s.stamps.rebuilt
        assert all(s.stamp(f"p:v{i}") != 0 for i in range(200))
        assert table.stat().st_size == HEADER_BYTES + 4 * slots
        assert not (tmp_path / (FILE_NAME + ".tmp")).exists()
        assert s.read("p:v7", 100.0)[0] is not None
    finally:
        s.close()
    again = LiveStore(tmp_path, 16 << 20, stamp_slots=slots)
    try:
        assert not again.stamps.rebuilt  # built once, then kept
    finally:
        again.close()


def test_the_legacy_stamps_database_is_dropped(tmp_path: Path) -> None:
    env = lmdb.open(str(tmp_path), max_dbs=8)
    legacy = env.open_db(b"stamps")
    with env.begin(write=True) as txn:
        txn.put(b"p:a", (7).to_bytes(8, "big"), db=legacy)
    env.close()
    LiveStore(tmp_path, 16 << 20).close()
    env = lmdb.open(str(tmp_path), max_dbs=8)
    try:
        with env.begin() as txn, pytest.raises(lmdb.NotFoundError):
            env.open_db(b"stamps", txn=txn, create=False)
    finally:
        env.close()


# -- real processes (LMDB allows one handle per environment and process, like one per worker) ----


def _open_at_once(path: str, barrier: object, out: object) -> None:
    barrier.wait()  # type: ignore[attr-defined]
    s = LiveStore(Path(path), 16 << 20)
    try:
        ok = all(s.maybe_active(f"p:v{i}") for i in range(200))
        out.put((s.stamps.rebuilt, ok))  # type: ignore[attr-defined]
    finally:
        s.close()


def test_two_workers_starting_at_once_build_the_table_once(tmp_path: Path) -> None:
    _populate(tmp_path)
    (tmp_path / FILE_NAME).unlink()
    barrier, out = SPAWN.Barrier(2), SPAWN.Queue()
    procs = [SPAWN.Process(target=_open_at_once, args=(str(tmp_path), barrier, out)) for _ in "ab"]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert sorted(results) == [(False, True), (True, True)]


def _write_batches(path: str, start: object, batches: int, keys: list[str]) -> None:
    s = LiveStore(Path(path), 64 << 20)
    try:
        start.wait()  # type: ignore[attr-defined]
        for n in range(batches):
            s.apply([view(k, item=f"{os.getpid()}-{n}") for k in keys], time.time())
    finally:
        s.close()


def test_concurrent_writer_processes_lose_no_bump(tmp_path: Path) -> None:
    """Every batch touching a key moves its slot by exactly one, whichever process wrote it."""
    mask = (1 << 20) - 1
    assert len({crc32(k.encode()) & mask for k in KEYS}) == len(KEYS)  # one slot per key
    batches = 300
    start = SPAWN.Barrier(2)
    procs = [
        SPAWN.Process(target=_write_batches, args=(str(tmp_path), start, batches, keys))
        for keys in (KEYS, KEYS[::-1])
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    s = LiveStore(tmp_path, 64 << 20)
    try:
        # 1 from the first batch's reserve (0 → 1), then +1 per batch of either process.
        assert [s.stamp(k) for k in KEYS] == [1 + 2 * batches] * len(KEYS)
    finally:
        s.close()


def _bump_table(path: str, start: object, rounds: int) -> None:
    table = StampTable(Path(path), 1 << 10, lambda: iter(()))
    try:
        start.wait()  # type: ignore[attr-defined]
        keys = [f"k{i}".encode() for i in range(2000)]  # every slot, many times a batch
        for _ in range(rounds):
            table.bump(keys)
    finally:
        table.close()


def test_concurrent_bumps_of_the_same_slots_are_not_lost(tmp_path: Path) -> None:
    """The table's read-modify-write alone, without LMDB serialising the writers in between:
    without the lock, two processes bumping the same 1024 slots lose updates at once."""
    rounds = 200
    start = SPAWN.Barrier(2)
    procs = [SPAWN.Process(target=_bump_table, args=(str(tmp_path), start, rounds)) for _ in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    table = StampTable(tmp_path, 1 << 10, lambda: iter(()))
    try:
        touched = {crc32(f"k{i}".encode()) & 1023 for i in range(2000)}
        assert {table.slots[i] for i in touched} == {2 * rounds}
    finally:
        table.close()


def _apply_one(path: str, key: str, item: str, ready: object = None, go: object = None) -> None:
    s = LiveStore(Path(path), 16 << 20)
    try:
        if ready is not None and go is not None:
            ready.set()  # type: ignore[attr-defined]
            go.wait()  # type: ignore[attr-defined]
        s.apply([view(key, item=item)], time.time())
    finally:
        s.close()


def _stamp_of(path: str, key: str, out: object) -> None:
    s = LiveStore(Path(path), 16 << 20)
    try:
        out.put((s.stamps.rebuilt, s.stamp(key), s.maybe_active(key)))  # type: ignore[attr-defined]
    finally:
        s.close()


def _run(target: object, *args: object) -> None:
    p = SPAWN.Process(target=target, args=args)
    p.start()
    p.join(60)
    assert p.exitcode == 0


def test_two_workers_see_each_others_writes(tmp_path: Path) -> None:
    s = LiveStore(tmp_path, 16 << 20)
    out = SPAWN.Queue()
    try:
        s.apply([view("p:x")], time.time())
        _run(_stamp_of, str(tmp_path), "p:x", out)
        assert out.get(timeout=10) == (False, s.stamp("p:x"), True)
        _run(_stamp_of, str(tmp_path), "p:nobody", out)
        assert out.get(timeout=10) == (False, 0, False)
        before = s.stamp("p:x")
        _run(_apply_one, str(tmp_path), "p:x", "y")
        rec, stamp = s.read("p:x", time.time())
        assert stamp == s.stamp("p:x") != before
        assert rec is not None and rec.views == ["y", "x"]
    finally:
        s.close()


def test_a_table_replaced_while_running_is_followed_at_the_next_write(tmp_path: Path) -> None:
    s = LiveStore(tmp_path, 16 << 20)
    out = SPAWN.Queue()
    try:
        s.apply([view("p:x")], time.time())
        (tmp_path / FILE_NAME).unlink()  # an operator "resets" it under a running worker
        _run(_stamp_of, str(tmp_path), "p:x", out)  # a restarted worker builds a new one
        rebuilt, stamp, active = out.get(timeout=10)
        assert rebuilt and active
        current = StampTable(tmp_path, 1 << 20, lambda: iter(()))  # the file now at the path
        try:
            assert current.get("p:x") == stamp
            s.apply([view("p:x", item="y")], time.time())  # maps the new file, then bumps
            assert current.get("p:x") == s.stamp("p:x") != stamp
        finally:
            current.close()
    finally:
        s.close()


def test_a_bump_waits_for_the_lock_and_follows_the_commit(tmp_path: Path) -> None:
    """Held by someone else, the directory lock holds the bump back — after the LMDB commit, so
    a reader meanwhile sees the new record under the old stamp (never the reverse)."""
    s = LiveStore(tmp_path, 16 << 20)
    try:
        s.apply([view("p:x")], time.time())  # a non-zero slot: the next reserve needs no lock
        before = s.stamp("p:x")
        ready, go = SPAWN.Event(), SPAWN.Event()
        child = SPAWN.Process(target=_apply_one, args=(str(tmp_path), "p:x", "y", ready, go))
        child.start()
        assert ready.wait(60)  # opened (which takes the lock briefly)
        fd = os.open(tmp_path, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            go.set()
            deadline = time.monotonic() + 60
            while (rec := s.read("p:x", time.time())[0]) is None or rec.views[0] != "y":
                assert time.monotonic() < deadline, "the child's batch never committed"
                time.sleep(0.01)
            time.sleep(0.2)
            assert child.is_alive() and s.stamp("p:x") == before
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            child.join(60)
        assert child.exitcode == 0 and s.stamp("p:x") != before
    finally:
        s.close()


def _reader(path: str, start: object, seconds: float, out: object) -> None:
    s = LiveStore(Path(path), 64 << 20)
    bad, reads = 0, 0
    try:
        start.wait()  # type: ignore[attr-defined]
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            rec, stamp = s.read("p:x", time.time())
            reads += 1
            # Batch n (from 1) commits then bumps the stamp to n + 1: a stamp s means batch
            # s - 1 is committed, so the record read after it has seq ≥ s - 1.
            if stamp > 1 and (rec is None or rec.seq < stamp - 1):
                bad += 1
        out.put((bad, reads))  # type: ignore[attr-defined]
    finally:
        s.close()


def test_a_reader_never_pairs_an_old_record_with_a_new_stamp(tmp_path: Path) -> None:
    start, out = SPAWN.Barrier(2), SPAWN.Queue()
    reader = SPAWN.Process(target=_reader, args=(str(tmp_path), start, 1.5, out))
    reader.start()
    s = LiveStore(tmp_path, 64 << 20)
    try:
        start.wait()
        stop = time.monotonic() + 1.5
        while time.monotonic() < stop:
            s.apply([view("p:x", item=str(time.monotonic_ns()))], time.time())
        bad, reads = out.get(timeout=60)
        reader.join(30)
        assert reader.exitcode == 0 and reads > 1000 and bad == 0
    finally:
        s.close()
