"""Merging in worker processes (snapshots/merge_pool.py) writes the very bytes that merging in
the build's own process writes: same keys in the same order, same values, across many row
groups (so results from different workers are put back in order), and no worker is left
running after the build."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import lmdb
import pytest

import bench.gen
import snapshots.engine.emit
from snapshots.config import ProfilesConfig, load_config
from snapshots.engine import EngineOptions, build_profiles


def raw(snap: Path) -> dict[str, list[tuple[bytes, bytes]]]:
    env = lmdb.open(str(snap), readonly=True, lock=False, max_dbs=4, subdir=True)
    try:
        with env.begin() as txn:
            return {
                name: list(txn.cursor(env.open_db(name.encode(), txn=txn)))
                for name in ("profiles", "alias")
            }
    finally:
        env.close()


def test_worker_processes_write_what_one_process_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    bench.gen.generate(1500, 1, 5, data)
    bench.gen.to_parquet(data / "app.ndjson", data / "app.parquet")
    cfg = load_config(data / "profiles.yaml", ProfilesConfig)
    inputs = [data / "crm.ndjson", data / "web.ndjson", data / "app.parquet", data / "pos.ndjson"]
    # ~12 row groups of persons, so four workers' results interleave.
    monkeypatch.setattr(snapshots.engine.emit, "PERSON_GROUP", 128)
    one = build_profiles(inputs, cfg, tmp_path / "one", options=EngineOptions(merge_workers=1))
    pool = build_profiles(inputs, cfg, tmp_path / "pool", options=EngineOptions(merge_workers=4))
    assert multiprocessing.active_children() == []
    assert one.written == pool.written == 1500
    a, b = raw(tmp_path / "one"), raw(tmp_path / "pool")
    assert len(a["profiles"]) == 1500 and len(a["alias"]) > 1500
    assert a == b
    assert pool.peak_rss_mb > one.peak_rss_mb  # the workers' memory is counted
