"""Following activations (server/app.py `_follow_snapshots`, server/decide/world.py
`WorldHolder.moved`): the active pointers are looked at on the event loop, and the full look in a
thread (`WorldHolder.prepare`, a GIL hand-over per system call) is made only when one moved — or
when nudged, or as a safety net every `full_look_s`."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from server import app
from server.decide.world import World, WorldHolder
from server.offline.demo import ensure_demo
from snapshots import store


@pytest.fixture
def data(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    ensure_demo(data)
    return data


def another_rules_version(data: Path) -> str:
    """A second installed rules version (a copy of the active one under another name)."""
    active = store.active_path(data, "rules")
    assert active is not None
    copy = active.parent / "copy-of-active"
    shutil.copytree(active, copy)
    return copy.name


class Counted(WorldHolder):
    """A holder that counts its full looks."""

    def __init__(self, data_dir: str) -> None:
        super().__init__(data_dir)
        self.looks = 0

    def prepare(self) -> World | None:
        self.looks += 1
        return super().prepare()


async def follow(holder: WorldHolder, intervals: int, full_look_s: float, then: Any = None) -> None:
    """Follow for `intervals` intervals of 10 ms, then run `then()` and follow until it says
    done (or 5 s)."""
    state = SimpleNamespace(holder=holder, settings=SimpleNamespace(reload_interval_s=0.01))
    task = asyncio.create_task(app._follow_snapshots(state, full_look_s))  # type: ignore[arg-type]
    try:
        await asyncio.sleep(intervals * 0.01)
        if then is not None:
            done = then()
            for _ in range(500):
                if done():
                    break
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_nothing_moved_no_full_look_after_the_first(data: Path) -> None:
    holder = Counted(str(data))
    assert holder.refresh()
    holder.looks = 0

    asyncio.run(follow(holder, intervals=30, full_look_s=1e9))

    assert holder.looks == 1  # the first look; none in the 29 intervals after it


def test_an_activation_is_followed_at_the_next_interval(data: Path) -> None:
    holder = Counted(str(data))
    assert holder.refresh()
    version = another_rules_version(data)
    holder.looks = 0

    def activate() -> Any:
        store.activate(data, "rules", version)
        return lambda: holder.looks >= 2

    asyncio.run(follow(holder, intervals=5, full_look_s=1e9, then=activate))

    assert holder.looks == 2  # the first look, then the one the activation asked for
    assert holder._seen["rules"].endswith("/" + version)


def test_the_safety_net_looks_in_full_however_still_the_pointers(data: Path) -> None:
    holder = Counted(str(data))
    assert holder.refresh()
    holder.looks = 0

    asyncio.run(follow(holder, intervals=10, full_look_s=0.0))

    assert holder.looks >= 5


def test_a_failed_look_is_tried_again(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    holder = Counted(str(data))
    assert holder.refresh()
    holder.looks = 0
    real = WorldHolder.prepare

    def failing_once(self: Counted) -> World | None:
        self.looks += 1
        if self.looks == 1:
            raise OSError("a store being moved")
        return real(self)

    monkeypatch.setattr(Counted, "prepare", failing_once)
    asyncio.run(follow(holder, intervals=10, full_look_s=1e9))

    assert holder.looks == 2


def test_the_pointers_show_a_swap_even_to_the_same_version_and_a_removed_version(
    data: Path,
) -> None:
    holder = WorldHolder(str(data))
    assert holder.moved()  # the first call
    assert not holder.moved()
    active = store.active_path(data, "rules")
    assert active is not None
    store.activate(data, "rules", active.name)  # a new link, same target
    assert holder.moved()
    assert not holder.moved()
    shutil.rmtree(active)
    assert holder.moved()
