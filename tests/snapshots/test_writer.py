"""The LMDB writer: grows its map when full, leaves no lock file, keeps keys in order."""

from __future__ import annotations

import itertools
from pathlib import Path

import lmdb
import pytest

from snapshots import writer


def test_map_grows_when_full_and_no_lock_file_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "MIN_MAP", 256 << 10)
    monkeypatch.setattr(writer, "CHUNK", 500)
    w = writer.EnvWriter(tmp_path, size_hint=0)  # far too small on purpose
    items = [(f"k{i:06d}".encode(), bytes([i % 251]) * 1000) for i in range(3000)]
    assert w.put_sorted("things", items) == 3000
    w.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.mdb"]
    env = lmdb.open(str(tmp_path), readonly=True, lock=False, max_dbs=2)
    with env.begin(db=env.open_db(b"things", create=False)) as txn:
        got = [(bytes(k), bytes(v)) for k, v in txn.cursor()]
    env.close()
    assert got == items


def test_versions_sort_by_time_and_differ_by_content() -> None:
    a = writer.make_version(1795360000.0, "aa" * 32)
    b = writer.make_version(1795360000.0, "bb" * 32)
    c = writer.make_version(1795363600.0, "00" * 32)
    assert a != b and sorted([c, a]) == [a, c]
    assert a.startswith("20261122T") and a.endswith("Z-aaaaaaaa")


def test_pairs_given_as_columns_make_the_same_file_as_pairs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Transactions of CHUNK pairs whatever the batches' sizes: the same file, byte for byte
    # (LMDB reuses the pages a transaction frees, so where they end shows in the file).
    monkeypatch.setattr(writer, "MIN_MAP", 256 << 10)
    monkeypatch.setattr(writer, "CHUNK", 700)
    items = [(f"k{i:06d}".encode(), bytes([i % 251]) * 300) for i in range(5000)]
    files = []
    for name, cuts in (("pairs", None), ("columns", [0, 1, 999, 1000, 3333, 4990, 5000])):
        path = tmp_path / name
        w = writer.EnvWriter(path, size_hint=0)
        if cuts is None:
            assert w.put_sorted("things", items) == 5000
        else:
            batches = [items[a:b] for a, b in itertools.pairwise(cuts)]
            columns = [([k for k, _ in b], [v for _, v in b]) for b in batches]
            assert w.put_sorted_columns("things", columns) == 5000
        w.close()
        files.append((path / "data.mdb").read_bytes())
    assert files[0] == files[1]


def test_columns_of_different_lengths_are_refused(tmp_path: Path) -> None:
    w = writer.EnvWriter(tmp_path, size_hint=0)
    with pytest.raises(ValueError, match="2 keys but 1 values"):
        w.put_sorted_columns("things", [([b"a", b"b"], [b"1"])])
    w.close()
