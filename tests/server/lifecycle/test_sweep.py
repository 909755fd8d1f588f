"""The start-up sweep and the kind lock (the flaky disk-full fault test, issue 18's CI run): every
worker sweeps staging as it starts, and a worker starting late took each kind's lock while the
other worker already served pushes — a push arriving in that instant was refused 409. Now the
sweep locks only a kind with leftovers, and a lock held for a moment is waited out."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.lifecycle import pipeline
from server.lifecycle.pipeline import Lifecycle, locked_within
from snapshots import store


@pytest.fixture()
def locks_taken(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    taken: list[str] = []
    real = store.locked

    @contextlib.contextmanager
    def spy(data_dir: str | Path, kind: str) -> Iterator[None]:
        taken.append(kind)
        with real(data_dir, kind):
            yield

    monkeypatch.setattr(store, "locked", spy)
    return taken


def test_a_sweep_with_nothing_to_remove_takes_no_lock(
    tmp_path: Path, locks_taken: list[str]
) -> None:
    for kind in ("profiles", "content", "rules"):
        store.versions_dir(tmp_path, kind).mkdir(parents=True)
        (store.versions_dir(tmp_path, kind) / store.STAGING).mkdir()
    Lifecycle(str(tmp_path), None, 2).sweep()
    assert locks_taken == []


def test_a_sweep_removes_leftovers_under_the_lock(tmp_path: Path, locks_taken: list[str]) -> None:
    left = store.new_staging(tmp_path, "profiles")
    (left / "upload.tar").write_bytes(b"x" * 100)
    tmp = store.versions_dir(tmp_path, "rules") / ".active.tmp-123"
    tmp.parent.mkdir(parents=True)
    tmp.symlink_to("nowhere")
    Lifecycle(str(tmp_path), None, 2).sweep()
    assert sorted(locks_taken) == ["profiles", "rules"]
    assert store.list_staging(tmp_path, "profiles") == []
    assert not tmp.is_symlink()


def test_a_lock_held_for_a_moment_is_waited_out(tmp_path: Path) -> None:
    held = threading.Event()

    def briefly() -> None:
        with store.locked(tmp_path, "rules"):
            held.set()
            time.sleep(0.05)

    t = threading.Thread(target=briefly)
    t.start()
    held.wait()
    with locked_within(tmp_path, "rules", wait_s=30.0):  # was StoreBusy at once
        pass
    t.join()


def test_a_lock_held_longer_is_still_refused(tmp_path: Path) -> None:
    with (
        store.locked(tmp_path, "rules"),
        pytest.raises(store.StoreBusy),
        locked_within(tmp_path, "rules", wait_s=0.05),
    ):
        pass
    assert pipeline.LOCK_WAIT_S < 1.0  # a push in progress (seconds) is refused, not queued
