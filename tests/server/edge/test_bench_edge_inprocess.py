"""Tiny runs of `bench.edge_inprocess` (and what `bench.instructions` reads), so they cannot rot
(their figures are not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import bench.edge_inprocess
import bench.instructions


def test_a_tiny_run_prints_cpu_and_memo_hits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--profiles", "300", "--requests", "50", "--batches", "2", "--cache", str(tmp_path)]
    assert bench.edge_inprocess.main([*argv, "--no-edge-memo", "--no-log", "--profile"]) == 0
    out = capsys.readouterr().out
    assert "Python calls per request" in out
    result = json.loads(out.strip().splitlines()[-1])
    assert len(result["batches"]) == 2 and result["cpu_us_per_request"] > 0
    assert result["edge_memo"] is False and result["decision_memo"] is True
    assert result["decision_log"] is False
    assert set(result["memo_hit_ratio"]) <= {"edge", "decision", "fragment", "decide"}


def test_a_tiny_run_through_the_protocol_answers_every_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--profiles", "300", "--requests", "50", "--batches", "2", "--cache", str(tmp_path)]
    assert bench.edge_inprocess.main([*argv, "--wire"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["wire"] is True and result["cpu_us_per_request"] > 0
    # Every request was answered by the protocol's shortcut: one write each, none left to ASGI.
    assert result["protocol_writes"] == result["requests"]


def test_make_only_answers_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # What `bench.instructions` subtracts: the same run, the requests made and none answered.
    argv = ["--profiles", "300", "--requests", "50", "--batches", "1", "--cache", str(tmp_path)]
    assert bench.edge_inprocess.main([*argv, "--wire", "--make-only"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["protocol_writes"] == 0 and result["memo_hit_ratio"] == {}


def test_instructions_are_read_from_valgrinds_report() -> None:
    report = "==4242== \n==4242== I   refs:      2,974,839,858\n"
    assert bench.instructions.instructions(report) == 2_974_839_858
    with pytest.raises(RuntimeError, match="no instruction count"):
        bench.instructions.instructions("==4242== ERROR SUMMARY: 0 errors\n")
