"""The build floor bench on a tiny export: it reads every record and rewrites every pair."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import bench.build_floor
import bench.gen
from snapshots.config import ProfilesConfig, load_config
from snapshots.engine import build_profiles


@pytest.mark.parametrize("fmt", ["parquet", "ndjson"])
def test_floor_counts_every_record_and_pair(
    fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    bench.gen.generate(300, 1, 7, data)
    ndjson = [data / f"{s}.ndjson" for s in bench.gen.SOURCES]
    lines = sum(len(f.read_bytes().splitlines()) for f in ndjson)
    if fmt == "parquet":
        for f in ndjson:
            bench.gen.to_parquet(f, f.with_suffix(".parquet"))
    cfg = load_config(data / "profiles.yaml", ProfilesConfig)
    snap = tmp_path / "snap"
    summary = build_profiles([data / f"{s}.{fmt}" for s in bench.gen.SOURCES], cfg, snap)

    argv = ["--data", str(data), "--format", fmt, "--snapshot", str(snap)]
    assert bench.build_floor.main(argv) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    assert res["records"] == lines == summary.records_read
    assert res["floor_pairs_written"] == summary.written + summary.aliases
    assert res["floor_s"] == max(res["floor_spread_s"], res["floor_chain_s"])
    assert res["floor_records_per_s"] > 0
