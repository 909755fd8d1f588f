"""The profile reader's long-lived read transactions (issue 15, item 6): a look-up reuses its
thread's transaction instead of beginning one per call. What that must not change: a new
snapshot is read as it is (nothing stale), each thread reads in its own transaction, a closed
reader fails clearly, and one damaged page does not poison every later look-up."""

from __future__ import annotations

import threading
from pathlib import Path

import msgspec
import pytest

import snapshots
from snapshots.model import Profile
from snapshots.writer import write_snapshot

FIELDS = frozenset({"attributes", "segments"})


def profile(cid: str, tier: str, pad: int = 0) -> Profile:
    return Profile(
        id=cid,
        ids={"cookie": [f"k-{cid}"]},
        attributes={"tier": tier, "pad": f"pad-{cid}" + "x" * pad},
        interests={},
        segments=[tier],
        counters={},
        last_seen={},
        updated_at=1.0,
        sources=["crm"],
    )


def write(out: Path, people: dict[str, Profile]) -> Path:
    enc = msgspec.msgpack.encode
    profiles = sorted((cid.encode(), enc(p)) for cid, p in people.items())
    aliases = sorted((f"cookie:k-{cid}".encode(), cid.encode()) for cid in people)
    write_snapshot(
        out,
        {"profiles": profiles, "alias": aliases},
        kind="profiles",
        counts={"profiles": len(profiles), "aliases": len(aliases)},
        sources={},
        params={"id_priority": ["customer_id", "cookie"]},
    )
    return out


def test_a_swapped_snapshot_is_read_as_it_is(tmp_path: Path) -> None:
    """Same keys, other values: the new reader answers from its own snapshot at once, in the
    same thread that has a transaction open on the old one; the old one, until closed, still
    answers as before; closed, it fails with a snapshot error and the new one goes on."""
    old = snapshots.open_profiles(write(tmp_path / "v1", {"p_a": profile("p_a", "gold")}))
    assert old.lookup({"cookie": "k-p_a"}, FIELDS).attributes["tier"] == "gold"  # type: ignore[union-attr]
    new = snapshots.open_profiles(
        write(tmp_path / "v2", {"p_a": profile("p_a", "bronze"), "p_b": profile("p_b", "silver")})
    )
    for _ in range(3):  # repeated: each call reuses its reader's transaction
        assert new.lookup({"cookie": "k-p_a"}, FIELDS).segments == ["bronze"]  # type: ignore[union-attr]
        assert new.get("p_a").attributes["tier"] == "bronze"  # type: ignore[union-attr]
        assert new.resolve("cookie", "k-p_b") == "p_b"
        assert old.get("p_a", FIELDS).segments == ["gold"]  # type: ignore[union-attr]
        assert old.resolve("cookie", "k-p_b") is None
    old.close()
    with pytest.raises(snapshots.SnapshotError):
        old.get("p_a")
    with pytest.raises(snapshots.SnapshotError):
        old.lookup({"cookie": "k-p_a"})
    assert new.get("p_b", FIELDS).segments == ["silver"]  # type: ignore[union-attr]
    new.close()


def test_each_thread_reads_in_its_own_transaction(tmp_path: Path) -> None:
    """Opened in one thread (as the server prepares a world), read from others at once."""
    people = {f"p_{i:04d}": profile(f"p_{i:04d}", f"t{i}") for i in range(200)}
    reader = snapshots.open_profiles(write(tmp_path / "v1", people))
    assert reader.get("p_0000") is not None  # this thread's transaction exists first
    seen: dict[int, list[str]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def work(n: int) -> None:
        try:
            barrier.wait()
            got = []
            for _ in range(20):
                for cid in people:
                    p = reader.lookup({"cookie": f"k-{cid}"}, FIELDS)
                    assert p is not None and p.id == cid
                    got.append(p.segments[0])
            seen[n] = got
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    want = [f"t{i}" for i in range(200)] * 20
    assert all(seen[n] == want for n in range(4))
    reader.close()


def _page_of(data: bytes, needle: bytes, page: int = 4096) -> int:
    at = data.find(needle)
    assert at > 0 and data.find(needle, at + 1) == -1
    return at // page


def test_a_damaged_page_does_not_poison_later_lookups(tmp_path: Path) -> None:
    """LMDB marks a transaction that met a damaged page as failed and refuses every later read
    in it (MDB_BAD_TXN): the reader must drop that transaction, or one bad record would make
    every visitor after it a CorruptRecord until the next snapshot."""
    people = {f"p_{i:04d}": profile(f"p_{i:04d}", f"t{i}", pad=300) for i in range(400)}
    snap = write(tmp_path / "v1", people)
    data = bytearray((snap / "data.mdb").read_bytes())
    victim, healthy = "p_0100", "p_0300"
    page = _page_of(data, f"pad-{victim}".encode())  # the victim's leaf page in `profiles`
    assert page != _page_of(data, f"pad-{healthy}".encode())
    # mp_flags (offset 10): neither branch nor leaf — LMDB's MDB_CORRUPTED on the way down.
    data[page * 4096 + 10 : page * 4096 + 12] = b"\x00\x00"
    (snap / "data.mdb").write_bytes(bytes(data))
    reader = snapshots.open_profiles(snap, verify=False)  # the damage is past the size check
    for _ in range(3):
        with pytest.raises(snapshots.CorruptRecord):
            reader.get(victim, FIELDS)
        with pytest.raises(snapshots.CorruptRecord):
            reader.lookup({"cookie": f"k-{victim}"})
        assert reader.get(healthy, FIELDS).segments == [healthy.replace("p_0", "t")]  # type: ignore[union-attr]
        assert reader.lookup({"cookie": f"k-{healthy}"}).id == healthy  # type: ignore[union-attr]
        assert reader.resolve("cookie", f"k-{healthy}") == healthy
    reader.close()


@pytest.mark.parametrize(
    "value",
    [
        b"\xc1",
        msgspec.msgpack.encode({"id": "p_a", "attributes": [1]}),
        b"\x81\xa2id\xa3\xff\xfe\xfd",
    ],
    ids=["not-msgpack", "wrong-type", "bad-utf8"],
)
def test_an_undecodable_record_is_a_corrupt_record(tmp_path: Path, value: bytes) -> None:
    """Whole or as a view, by id or by alias: a CorruptRecord naming the snapshot, never a
    msgspec or Unicode error; the next, healthy look-up answers."""
    good = msgspec.msgpack.encode(profile("p_b", "gold"))
    out = tmp_path / "v1"
    write_snapshot(
        out,
        {
            "profiles": [(b"p_a", value), (b"p_b", good)],
            "alias": [(b"cookie:k-p_a", b"p_a"), (b"cookie:k-p_b", b"p_b")],
        },
        kind="profiles",
        counts={"profiles": 2, "aliases": 2},
        sources={},
        params={"id_priority": ["cookie"]},
    )
    reader = snapshots.open_profiles(out)
    for fields in (None, FIELDS):
        with pytest.raises(snapshots.CorruptRecord, match="does not decode"):
            reader.get("p_a", fields)
        with pytest.raises(snapshots.CorruptRecord, match="does not decode"):
            reader.lookup({"cookie": "k-p_a"}, fields)
        assert reader.lookup({"cookie": "k-p_b"}, fields).id == "p_b"  # type: ignore[union-attr]
    reader.close()
