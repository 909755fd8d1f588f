"""The benchmark's core runs (tiny iteration count, no peers) so it cannot rot. Timings are not
asserted here: budgets are measured by `python -m bench.rules`, never by timed tests."""

from __future__ import annotations

from bench.rules import run


def test_bench_core_runs() -> None:
    result = run(iterations=40, peers=False, compile_big=False)
    for key in ("placement50_p50_us", "placement50_p99_us", "decision3_p50_us", "decision3_p99_us"):
        assert result[key] > 0
