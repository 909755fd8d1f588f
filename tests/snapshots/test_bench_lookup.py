"""A tiny run of bench.lookup, so it cannot rot (figures are not asserted), and a check that its
synthetic snapshot is laid out as a build's: aliases lead to the profile that names them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import bench.lookup
import snapshots
from snapshots.stitching import canonical_id


def test_lookup_bench_prints_json_last(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--profiles", "300,900", "--lookups", "200", "--workdir", str(tmp_path)]
    assert bench.lookup.main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["bench"] == "lookup"
    assert [r["profiles"] for r in out["sizes"]] == [300, 900]
    for row in out["sizes"]:
        assert row["found_ratio"] == 1.0  # every cookie probe draws is in the snapshot
        assert row["alias_rules_fields_p50_us"] > 0 and "write_s" in row
    # Cached: a second run writes nothing (no write_s).
    assert bench.lookup.main(argv) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert all("write_s" not in r for r in again["sizes"])


def test_synthetic_snapshot_is_laid_out_as_a_build(tmp_path: Path) -> None:
    snap, _ = bench.lookup.ensure_snapshot(50, 1, tmp_path)
    reader = snapshots.open_profiles(snap)  # manifest, sizes and hashes check out
    assert reader.manifest.counts == {"profiles": 50, "aliases": 50 + 35 + 40}
    for i in range(50):
        cid = reader.resolve("cookie", f"k1-{i:x}")
        assert cid == canonical_id(f"customer_id:C{i}")
        p = reader.get(cid)
        assert isinstance(p, snapshots.Profile) and p.ids["cookie"] == [f"k1-{i:x}"]
        for t, (v,) in p.ids.items():
            assert reader.resolve(t, v) == cid
    reader.close()
