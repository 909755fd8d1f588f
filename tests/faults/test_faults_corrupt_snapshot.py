"""A corrupted active snapshot on disk. Damage the open-time checks can see (a truncated or
replaced data file, a garbled manifest, garbage where LMDB's meta pages are) is refused when a
worker opens it: the kind stays unloaded (or on its previous version), `/readyz` names the file and
the reason, and decisions go on without it. Damage inside data pages, which only hashing would
find, is met per request: the record falls back to a context-only decision, counted as
`profile_error`.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from bench.http import demo_cookies
from bench.procs import edgeside
from snapshots import store
from tests.provekit import prove_copy, prove_data

# In the second test stream (tests/run-streams), which balances the two.
pytestmark = pytest.mark.slow

__all__ = ["prove_copy", "prove_data"]

EDGE = "/v1/edge?p=home_hero,home_recs&site=shop-fr"
ALICE = {"Cookie": "edgeside_id=c-alice"}


def truncate(path: Path) -> None:
    data = path / "data.mdb"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])


def garble_manifest(path: Path) -> None:
    (path / "manifest.json").write_bytes(b'{"kind": "profiles", "version": ')


def zero_meta_pages(path: Path) -> None:
    data = path / "data.mdb"
    raw = data.read_bytes()
    data.write_bytes(bytes(8192) + raw[8192:])


DAMAGE = {
    "truncated-data": (truncate, "truncated or replaced"),
    "garbled-manifest": (garble_manifest, "manifest.json"),
    "meta-pages-zeroed": (zero_meta_pages, "LMDB"),
}


def active(data: Path, kind: str) -> Path:
    path = store.active_path(data, kind)
    assert path is not None
    return path.resolve()


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_active_profiles_refused_at_start(prove_copy: Path, damage: str) -> None:
    harm, reason = DAMAGE[damage]
    harm(active(prove_copy, "profiles"))
    with edgeside(prove_copy, workers=2, ready=False) as server, server.client() as client:
        ready = client.get("/readyz")
        edges = [client.get(EDGE, headers=ALICE) for _ in range(20)]
        decided = client.post(
            "/v1/decide",
            json={"visitor": {"ids": {"cookie": "c-alice"}}, "placements": ["home_hero"]},
        )
        log = server.output()
    assert ready.status_code == 503
    body = ready.json()
    assert body["ready"] is False
    profiles = next(s for s in body["snapshots"] if s["kind"] == "profiles")
    assert profiles["version"] is None
    said = [w for w in body["warnings"] if w.startswith("profiles:") and reason in w]
    assert said, body["warnings"]
    assert {r.status_code for r in edges} == {204}
    assert decided.status_code == 200
    assert "Traceback" not in log


def test_damage_under_a_running_server_keeps_the_version_it_has(prove_copy: Path) -> None:
    """A new activation pointing at a damaged copy is refused; the open version keeps serving."""
    with edgeside(prove_copy, workers=2) as server, server.client() as client:
        before = client.get(EDGE, headers=ALICE)
        current = active(prove_copy, "profiles")
        broken = current.parent / "99991231T000000Z-damaged"
        broken.mkdir()
        for f in current.iterdir():
            (broken / f.name).write_bytes(f.read_bytes())
        truncate(broken)
        store.activate(prove_copy, "profiles", broken.name)
        time.sleep(1.0)  # a few reload intervals
        after = [client.get(EDGE, headers=ALICE) for _ in range(20)]
        ready = client.get("/readyz").json()
    assert before.status_code == 204
    assert {r.headers["x-edge-snapshot"] for r in after} == {before.headers["x-edge-snapshot"]}
    keys = {(r.headers["x-edge-key"], r.headers.get("x-edge-fallback")) for r in after}
    assert keys == {(before.headers["x-edge-key"], None)}, (before.headers, keys)
    assert any(w.startswith("profiles:") and "truncated" in w for w in ready["warnings"])


def test_rot_inside_data_pages_falls_back_per_request(prove_copy: Path) -> None:
    """Same size, same manifest (the worker does not hash at open: seconds at 10 M profiles), so
    the damage is found when a record is read: that visitor gets a context-only decision, counted
    as `profile_error`, and the log names the snapshot but never the visitor's identifier."""
    path = active(prove_copy, "profiles")
    data = path / "data.mdb"
    raw = bytearray(data.read_bytes())
    rng = random.Random(2)  # this seed leaves the tree openable and damages ~70 of 303 visitors
    for _ in range(300):
        raw[rng.randrange(8192, len(raw))] = rng.randrange(256)
    data.write_bytes(bytes(raw))
    cookies = demo_cookies()
    with edgeside(prove_copy, workers=1) as server:
        with server.client() as client:
            statuses = set()
            for cookie in cookies:
                edge = client.get(EDGE, headers={"Cookie": f"edgeside_id={cookie}"})
                statuses.add(edge.status_code)
            metrics = client.get("/metrics").text
        alive = server.proc.poll() is None
        log = server.output()
    assert statuses == {204}, statuses
    assert alive
    counted = [line for line in metrics.splitlines() if 'reason="profile_error"' in line]
    assert counted and float(counted[0].split()[-1]) >= 10, counted
    assert "CorruptRecord" in log
    banner_end = "/metrics' | head"  # the last of the start-up banner's curl examples
    assert banner_end in log  # else the split below would search the banner's own cookies
    logged = log.split(banner_end, 1)[-1]
    leaked = [c for c in cookies if c in logged]
    assert not leaked, leaked[:5]
