"""bench.report without running the benchmarks: headline figures picked from results of the shape
each benchmark prints, and a chart that is well-formed, self-contained SVG."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from bench import report


def fake_results() -> dict[str, Any]:
    steps = [
        {"offered_rps": 250, "achieved_rps": 240.0, "p50_ms": 0.4, "p99_ms": 1.5},
        {"offered_rps": 4000, "achieved_rps": 3100.0, "p50_ms": 1.0, "p99_ms": 9.0},
        {"offered_rps": None, "achieved_rps": 9000.0, "p50_ms": 5.0, "p99_ms": 25.0},
    ]
    load = {
        "steps": steps,
        "knee": steps[1],
        "max_rps": 9000.0,
        "errors": 0,
        "soak": {
            "seconds": 15,
            "requests": 5000,
            "workers": {
                "1": {"anon_growth_kb": 0, "anon_series_kb": [30000, 30100, 30100]},
                "2": {"anon_growth_kb": 4, "anon_series_kb": [31000, 31004, 31004]},
            },
        },
    }
    benches = {
        "load": {"result": load},
        "http": {"result": {"edge_rps": 9000, "ratio": 0.9}},
        "swap": {"error": "timed out after 600s"},
    }
    return {
        "mode": "quick",
        "finished_at": "2026-11-22T16:00:00Z",
        "machine": {"cpus": 2, "python": "3.11"},
        "benches": benches,
    }


def test_headline_and_chart() -> None:
    results = fake_results()
    head = report.headline(results["benches"])
    assert head["load_max_rps"] == 9000.0
    assert head["load_knee_offered_rps"] == 4000
    assert head["soak_anon_growth_kb_max"] == 4
    assert head["edge_vs_bare_ratio"] == 0.9
    assert head["swap_failed_requests"] is None  # a failed benchmark leaves its figures empty
    svg = report.chart(results)
    root = ET.fromstring(svg)  # noqa: S314 - our own output
    assert root.tag.endswith("svg")
    assert svg.count("<polyline") == 4  # p50, p99, and one memory line per worker
    assert "knee" in svg and "href" not in svg  # nothing fetched from elsewhere


def test_chart_without_load_results() -> None:
    # No load benchmark ran: both panels are still drawn, empty, and the SVG is well-formed.
    results = fake_results()
    results["benches"] = {}
    svg = report.chart(results)
    root = ET.fromstring(svg)  # noqa: S314 - our own output
    assert root.tag.endswith("svg")
    assert "/v1/edge under load" in svg and "soak: worker private memory (0 s)" in svg
    assert "<polyline" not in svg and "knee" not in svg  # nothing plotted from no results


def test_the_knee_is_the_last_step_within_the_objective() -> None:
    from bench import load

    def step(offered: int | None, p99: float, errors: int = 0) -> dict[str, Any]:
        return {"offered_rps": offered, "achieved_rps": 1.0, "p99_ms": p99, "errors": errors}

    steps = [step(250, 1.5), step(1000, 4.0), step(4000, 6.8), step(6000, 11.7), step(None, 25)]
    found = load.knee(steps)
    assert found is not None and found["offered_rps"] == 4000
    assert (
        load.knee([step(250, 1.0), step(1000, 2.0, errors=3), step(2000, 2.0)])["offered_rps"]
        == 250
    )  # type: ignore[index]
    assert load.knee([step(250, 50.0)]) is None
