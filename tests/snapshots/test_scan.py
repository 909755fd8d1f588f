"""Reading every page of a snapshot in a child process: damage that would crash a reader is
refused before anything serves it."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

import snapshots
from server.demo import ensure_demo
from snapshots import store
from snapshots.scan import read_all, scan


@pytest.fixture(scope="module")
def content(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("demo")
    ensure_demo(data)
    path = store.active_path(data, "content")
    assert path is not None
    return path.resolve()


def test_a_sound_snapshot_is_read_whole(content: Path) -> None:
    entries, size = read_all(content)
    assert entries > 93 and size > 0  # the 93 demo items, plus the indexes
    scan(content)


def test_damage_that_crashes_a_reader_is_refused_not_fatal(content: Path, tmp_path: Path) -> None:
    """Some damage makes LMDB itself crash the reading process (it keeps no page checksums): the
    scan reports it as a `SnapshotError`, and this process lives on. About 3 in 100 random
    damages do; a seeded search finds one."""
    rnd = random.Random(20261122)
    original = (content / "data.mdb").read_bytes()
    copy = tmp_path / "snap"
    shutil.copytree(content, copy)
    crashed = None
    for _ in range(400):
        raw = bytearray(original)
        for _ in range(rnd.randint(1, 400)):
            raw[8192 + rnd.randrange(len(raw) - 8192)] = rnd.randrange(256)
        (copy / "data.mdb").write_bytes(bytes(raw))
        try:
            scan(copy)
        except snapshots.SnapshotError as exc:
            if "crashed the reading process" in str(exc):
                crashed = str(exc)
                break
    assert crashed is not None, "no damage among 400 crashed LMDB (expected about 12)"
    assert "damaged" in crashed


def test_a_missing_data_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(snapshots.SnapshotError):
        scan(tmp_path)
