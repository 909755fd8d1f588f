"""Disk full while a pushed snapshot is staged: the data directory lives on a small tmpfs that is
filled up to leave room for less than the upload (the body fails to stream to staging) or for the
upload but not its unpacked copy (unpacking fails). Either way the push is refused with a clear
507, nothing changes (same active versions, staging empty), the node keeps serving, and the same
push succeeds once space is freed. Needs `mount` (root): skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.procs import edgeside
from snapshots import store
from tests.provekit import ADMIN_TOKEN, prove_data
from tests.server.lifecycle.kit import profiles_snapshot, tar_of

# In the second test stream (tests/run-streams), which balances the two.
pytestmark = pytest.mark.slow

__all__ = ["prove_data"]

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(mnt: Path, leave: int) -> Path:
    filler = mnt / "filler"
    free = shutil.disk_usage(mnt).free
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


@pytest.mark.parametrize("leave", [16 << 10, 420 << 10], ids=["upload-fails", "unpack-fails"])
def test_disk_full_while_staging_refuses_and_changes_nothing(
    small_disk: Path, prove_data: Path, tmp_path: Path, leave: int
) -> None:
    data = small_disk / "data"
    shutil.copytree(prove_data, data, symlinks=True)
    body = tar_of(profiles_snapshot(tmp_path, key=None))
    assert len(body) < 420 << 10 < 2 * len(body), len(body)  # the two cases are what they say
    before = {kind: store.active_path(data, kind) for kind in ("profiles", "content", "rules")}
    env = {"EDGESIDE_ADMIN_TOKEN": ADMIN_TOKEN}
    with edgeside(data, workers=2, env=env, log_dir=tmp_path) as server:
        with httpx.Client(base_url=server.url, timeout=30, headers=AUTH) as client:
            filler = fill(small_disk, leave)
            refused = client.put("/v1/admin/snapshots/profiles", content=body)
            after = {kind: store.active_path(data, kind) for kind in before}
            staging = store.versions_dir(data, "profiles") / store.STAGING
            leftovers = list(staging.iterdir()) if staging.exists() else []
            edge = client.get("/v1/edge?p=home_hero&site=shop-fr")
            filler.unlink()
            accepted = client.put("/v1/admin/snapshots/profiles", content=body)
        log = server.output()
    assert refused.status_code == 507, refused.text
    assert refused.json()["error"]["code"] == "insufficient_storage"
    assert "space" in refused.json()["error"]["message"]
    assert after == before
    assert not leftovers, leftovers
    assert edge.status_code == 204
    assert accepted.status_code == 200, accepted.text
    assert "Traceback" not in log, log[-3000:]
