"""One compile per activation: the worker that activates a rules version serves with the engine
its smoke validation compiled and tried (issue 18: each node compiled the rules twice)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import rules
from server.decide.world import WorldHolder
from server.lifecycle.pipeline import Lifecycle
from server.offline.demo import ensure_demo
from snapshots import archive, store

from .kit import KEY, rules_snapshot


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real: Callable[..., Any] = rules.compile_ruleset

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(rules, "compile_ruleset", counted)
    return calls


def _ingest(life: Lifecycle, holder: WorldHolder, kind: str, snap: Path) -> str:
    staging = store.new_staging(life.data_dir, kind, prefix="test-")
    tar = archive.pack(snap, staging / "upload.tar")
    world = holder.acquire()
    try:
        with store.locked(life.data_dir, kind):
            result = life.ingest(kind, tar, tar.stat().st_size, world)
    finally:
        holder.release(world)
    assert result.activated
    return result.version


@pytest.fixture()
def node(tmp_path: Path) -> tuple[Path, WorldHolder]:
    data = tmp_path / "data"
    ensure_demo(data, KEY.encode())
    holder = WorldHolder(str(data), KEY)
    holder.refresh()
    return data, holder


def test_the_activating_worker_serves_the_engine_validation_compiled(
    node: tuple[Path, WorldHolder], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, holder = node
    life = Lifecycle(str(data), KEY.encode(), 3, holder)
    calls = _counting(monkeypatch)
    version = _ingest(life, holder, "rules", rules_snapshot(tmp_path))
    assert calls[0] == 1  # the validation
    assert holder.refresh()
    assert holder.current.versions["rules"] == version
    assert calls[0] == 1  # not compiled again by the worker
    # Switching back to a kept version validates it and hands that engine over too.
    # (Versions are named by content, so the one kept before is whichever is not active.)
    (previous,) = [v for v in store.list_versions(data, "rules") if v != version]
    with store.locked(data, "rules"):
        life.switch("rules", previous, holder.current)
    assert holder.refresh()
    assert holder.current.versions["rules"] == previous
    assert calls[0] == 2


def test_without_a_holder_the_worker_compiles_for_itself(
    node: tuple[Path, WorldHolder], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker of the node (or a Lifecycle not given the holder) compiles on its own."""
    data, holder = node
    life = Lifecycle(str(data), KEY.encode(), 3)
    calls = _counting(monkeypatch)
    version = _ingest(life, holder, "rules", rules_snapshot(tmp_path))
    assert holder.refresh()
    assert holder.current.versions["rules"] == version
    assert calls[0] == 2


def test_an_offered_engine_serves_only_the_version_it_was_compiled_from(
    node: tuple[Path, WorldHolder], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rules version activated by someone else (another worker, a crash between the offer and
    the activation) is compiled from its own files, never served with a stale offer."""
    data, holder = node
    life = Lifecycle(str(data), KEY.encode(), 3, holder)
    other = Lifecycle(str(data), KEY.encode(), 3)
    offered: list[rules.Engine] = []
    adopt = holder.adopt
    monkeypatch.setattr(holder, "adopt", lambda p, e, m: (offered.append(e), adopt(p, e, m)))
    _ingest(life, holder, "rules", rules_snapshot(tmp_path))
    assert len(offered) == 1
    # Not refreshed yet: the offer for the first version is pending when another worker's
    # push activates a second one.
    second = _ingest(other, holder, "rules", rules_snapshot(tmp_path))
    assert holder.refresh()
    assert holder.current.versions["rules"] == second
    assert holder.current.engine is not None
    assert holder.current.engine is not offered[0]
