"""A newly opened snapshot's file is read through in the background (server/decide/world.py
`prefetch`), profiles and content alike, unless it would not fit easily in memory."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from server.decide import world
from server.decide.world import WorldHolder
from server.offline.demo import ensure_demo


def test_opening_a_store_prefetches_its_profiles_and_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    ensure_demo(data)
    asked: list[Path] = []
    real = world.prefetch

    def recorded(version: Path) -> threading.Thread | None:
        asked.append(version)
        return real(version)

    monkeypatch.setattr(world, "prefetch", recorded)
    holder = WorldHolder(str(data))
    assert holder.refresh()
    active = holder.current.paths
    assert sorted(asked) == sorted(Path(active[kind]) for kind in ("profiles", "content"))
    assert all((version / "data.mdb").is_file() for version in asked)


def test_prefetch_reads_a_file_that_fits_and_not_one_that_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = tmp_path / "v1"
    version.mkdir()
    (version / "data.mdb").write_bytes(b"\0" * 65536)
    monkeypatch.setattr(world, "_available_bytes", lambda: 1 << 30)
    reading = world.prefetch(version)
    assert reading is not None
    reading.join()  # reads to the end and stops
    monkeypatch.setattr(world, "_available_bytes", lambda: 65536)  # over half of it
    assert world.prefetch(version) is None
    assert world.prefetch(tmp_path / "missing") is None
