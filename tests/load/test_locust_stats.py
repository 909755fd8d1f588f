"""`bench.load` when locust measured nothing: a clear `LocustError` naming the step, not a crash
on locust's "N/A" percentiles; the other steps' figures still reach the JSON."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import load

# What locust (2.x, locust/stats.py: StatsCSV.requests_csv) writes for a run in which no request
# completed: its percentile columns are "N/A". (Written here rather than by locust's own writer in
# a child process: importing locust costs ~12 s on a loaded CI machine, for the same bytes.)
PERCENTILES = ["50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%"]
NO_REQUESTS = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
    "Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,"
    + ",".join(PERCENTILES)
    + "\r\n,Aggregated,0,0,0,0.0,0,0,0.0,0.0,0.0,"
    + ",".join(["N/A"] * len(PERCENTILES))
    + "\r\n"
)


def test_no_requests_is_a_clear_error_not_a_crash_on_na(tmp_path: Path) -> None:
    prefix = tmp_path / "locust-10"
    (tmp_path / "locust-10_stats.csv").write_text(NO_REQUESTS)
    with pytest.raises(load.LocustError) as caught:
        load.locust_stats(prefix, 10, 5, "ConnectionRefusedError: [Errno 111]")
    message = str(caught.value)
    assert message.startswith("locust at 10 users for 5 s: no request completed")
    assert "ConnectionRefusedError" in message, "what locust said is passed on"


def test_no_statistics_at_all_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(load.LocustError, match="locust at 3 users for 2 s: no statistics written"):
        load.locust_stats(tmp_path / "locust-3", 3, 2, "")


def test_a_step_that_measured_nothing_is_kept_and_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def step(url: str, users: int, seconds: int, out_dir: Path) -> dict[str, object]:
        if users == 2:
            return load.locust_stats(out_dir / "never-written", users, seconds)
        return {"users": users, "requests": 7, "failures": 0}

    monkeypatch.setattr(load, "locust_step", step)
    steps = load.locust_steps("http://127.0.0.1:9", [2, 5], 1, tmp_path)
    assert steps[0] == {
        "users": 2,
        "seconds": 1,
        "error": steps[0]["error"],
    } and steps[0]["error"].startswith("locust at 2 users for 1 s: no statistics written")
    assert steps[1]["requests"] == 7, "the other steps still run and report"
    assert "bench.load: error: locust at 2 users" in capsys.readouterr().err
