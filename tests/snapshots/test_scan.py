"""Reading every page of a snapshot in a child process: damage that would crash a reader is
refused before anything serves it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import snapshots
from server.offline.demo import ensure_demo
from snapshots import store
from snapshots.scan import read_all, scan
from tests.snapshots.kit import damage_until_a_reader_crashes


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
    copy = tmp_path / "snap"
    shutil.copytree(content, copy)
    crashed = damage_until_a_reader_crashes(copy, seed=20261122)
    assert "damaged" in crashed


def test_a_missing_data_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(snapshots.SnapshotError):
        scan(tmp_path)
