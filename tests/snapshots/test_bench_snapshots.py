"""A tiny run of the benchmark programs, so they cannot rot (figures are not asserted)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

import bench.gen
import bench.snapshots
from server.cli import main


def test_gen_writes_exports_that_build(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        bench.gen.main(
            ["--profiles", "300", "--content", "20", "--seed", "3", "--out", str(tmp_path)]
        )
        == 0
    )
    commands = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith("edgeside ")
    ]
    assert len(commands) == 2
    first = (tmp_path / "crm.ndjson").read_bytes()
    bench.gen.generate(300, 20, 3, tmp_path / "again")
    assert (tmp_path / "again" / "crm.ndjson").read_bytes() == first  # deterministic
    for cmd in commands:
        assert main(shlex.split(cmd)[1:]) == 0
    out = capsys.readouterr().out
    assert "profiles written 300" in out and "items written 20" in out


def test_snapshots_bench_prints_json_last(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--profiles",
        "200,400",
        "--direct-profiles",
        "600",
        "--lookups",
        "300",
        "--workdir",
        str(tmp_path),
    ]
    assert bench.snapshots.main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [s["profiles"] for s in result["sizes"]] == [200, 400, 600]
    assert result["sizes"][2]["built_by"] == "direct"
    for key in (
        "open_s",
        "lookup_p50_us",
        "lookup_p99_us",
        "alias_lookup_p50_us",
        "alias_get_raw_p50_us",
        "profile_get_raw_p50_us",
        "get_one_key_p50_us",
        "profiles_depth",
        "rss_private_mb",
    ):
        assert result["sizes"][0][key] > 0
    assert result["sizes"][1]["found_ratio"] == 1.0
    assert result["lookup_ratio_largest_smallest"] > 0
    # One build per size and format, each in its own process with its own figures.
    assert [(b["profiles"], b["format"]) for b in result["builds"]] == [
        (200, "parquet"), (200, "ndjson"), (400, "parquet"), (400, "ndjson"),
    ]  # fmt: skip
    for b in result["builds"]:
        assert b["build_records_per_s"] > 0 and b["build_peak_rss_mb"] > 0
        assert b["build_temp_disk_mb"] >= 0 and b["records"] > 200
        # The floor beside each build: its parts measured on the same exports and snapshot.
        assert b["floor_records_per_s"] > 0 and b["build_over_floor"] > 0
        assert set(b["floor_cpu_s"]) == {"read", "stitch", "objects", "encode", "write", "sha256"}
    assert set(result["build_records_per_s_by_format"]) == {"parquet", "ndjson"}
    assert set(result["floor_records_per_s_by_format"]) == {"parquet", "ndjson"}


def test_merge_phase_bench_keeps_the_persons_file_and_prints_json_last(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import bench.merge_phase

    data = tmp_path / "data"
    bench.gen.generate(400, 1, 5, data)
    persons = tmp_path / "persons.parquet"
    argv = [str(data), "--format", "ndjson", "--persons", str(persons), "--workers", "2"]
    assert bench.merge_phase.main(argv) == 0
    assert persons.exists()  # kept: a second run (or another checkout) merges the same file
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["profiles"] == 400 and first["workers_cpu_s"] > 0
    assert bench.merge_phase.main([*argv[:-1], "1"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["profiles"] == 400 and again["parent_cpu_s"] > 0
