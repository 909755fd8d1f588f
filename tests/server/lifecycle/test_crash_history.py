"""A node SIGKILLed between a push's `active` swap and its history write (issue 18; the flaky
`test_crash.py`, whose free-running rules push was sometimes killed right there): on restart it
serves that version, and the next push keeps it — it is the version active before that push,
the one rollback returns to. GC used to read the history alone, count the versions recorded
before it as the most recent, and delete it. The crash is reproduced by leaving exactly what such
a kill leaves (tests/snapshots/test_store_lifecycle.py makes the real kill at that step)."""

from __future__ import annotations

from pathlib import Path

import httpx

from bench.procs import edgeside
from snapshots.store import _swap_active, active_version, install, read_history, versions_dir
from snapshots.verify import verify_snapshot
from tests.server.lifecycle.kit import ADMIN, AUTH, EDGE, TOKEN, push, rules_snapshot, tar_of

ENV = {"EDGESIDE_ADMIN_TOKEN": TOKEN, "EDGESIDE_KEEP_VERSIONS": "2"}


def pushed(client: httpx.Client, tmp_path: Path) -> str:
    r = push(client, "rules", tar_of(rules_snapshot(tmp_path, key=None)))
    assert r.status_code == 200 and r.json()["activated"], r.text
    version: str = r.json()["version"]
    return version


def test_the_version_a_crash_left_unrecorded_survives_the_next_push(
    demo_copy: Path, tmp_path: Path
) -> None:
    with edgeside(demo_copy, workers=2, env=ENV, log_dir=tmp_path) as node, node.client() as c:
        recorded = [pushed(c, tmp_path), pushed(c, tmp_path)]
    # What a SIGKILL after the swap and before the history write leaves: the new version
    # installed and active, the history ending on the one before.
    unrecorded = install(demo_copy, rules_snapshot(tmp_path, key=None))
    _swap_active(demo_copy / "rules", unrecorded)
    assert read_history(demo_copy, "rules")[-1].version == recorded[-1]

    with edgeside(demo_copy, workers=2, env=ENV, log_dir=tmp_path) as node, node.client() as c:
        assert f"rules={unrecorded}" in c.get(EDGE).headers["x-edge-snapshot"]
        latest = pushed(c, tmp_path)
        assert verify_snapshot(versions_dir(demo_copy, "rules") / unrecorded) == []
        r = c.post(f"{ADMIN}/rules/rollback", headers=AUTH)
        assert r.status_code == 200, r.text
        assert (r.json()["version"], r.json()["previous"]) == (unrecorded, latest)
        assert active_version(demo_copy, "rules") == unrecorded
