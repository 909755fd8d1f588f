"""A tiny run of `bench.edge_inprocess`, so it cannot rot (its figures are not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import bench.edge_inprocess


def test_a_tiny_run_prints_cpu_and_memo_hits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--profiles", "300", "--requests", "50", "--batches", "2", "--cache", str(tmp_path)]
    assert bench.edge_inprocess.main([*argv, "--no-edge-memo", "--profile"]) == 0
    out = capsys.readouterr().out
    assert "Python calls per request" in out
    result = json.loads(out.strip().splitlines()[-1])
    assert len(result["batches"]) == 2 and result["cpu_us_per_request"] > 0
    assert result["edge_memo"] is False and result["decision_memo"] is True
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
