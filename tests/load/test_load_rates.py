"""Load against a real two-worker server, bounded for CI: wrk at fixed offered rates, locust with
the project's locustfile, and a soak with every worker's memory sampled each second.

Error rate 0 at every rate; memory flat after warm-up. `EDGESIDE_SOAK_S` lengthens the soak (CI:
15 s); `python -m bench.load` is the full run with the knee of the curve.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import load
from bench.procs import edgeside
from tests.conftest import require_binary
from tests.provekit import bounded, prove_data

__all__ = ["prove_data"]

# Private memory a worker may gain in a soak after warm-up: bounded caches (memos, decoded
# content) fill in the first seconds; a leak of a few hundred bytes a request crosses this.
ANON_GROWTH_KB = 8_000


# It asserts the rates the load reached: not beside another test stream.
pytestmark = pytest.mark.alone


def test_rates_locust_and_soak(prove_data: Path, tmp_path: Path) -> None:
    require_binary("wrk")
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("\n".join(load.demo_cookies()) + "\n")
    soak_s = bounded("EDGESIDE_SOAK_S", 15)
    with edgeside(prove_data, workers=2, log_dir=tmp_path) as server:
        load.wrk_paced(server.url, 1, 8, 0, cookies)
        steps = [load.rate_step(server.url, rate, 3, cookies) for rate in ("250", "1000", "max")]
        locust = load.locust_step(server.url, 8, 4, tmp_path)
        soaked = load.soak(server, soak_s, 400, cookies)
        log = server.output()
    for step in steps:
        print(step)
    print({k: v for k, v in soaked.items() if k != "workers"})
    for pid, w in soaked["workers"].items():
        print(pid, {k: v for k, v in w.items() if k != "anon_series_kb"})
    assert all(s["requests"] > 0 and s["errors"] == 0 for s in steps), steps
    assert steps[-1]["achieved_rps"] > steps[0]["achieved_rps"]
    assert locust["requests"] > 0 and locust["failures"] == 0, locust
    assert set(locust["by_route"]) >= {"/v1/edge", "/v1/decide"}
    assert soaked["errors"] == 0 and soaked["requests"] > 100 * soak_s
    assert soaked["workers_alive"] and len(soaked["workers"]) == 2
    for w in soaked["workers"].values():
        assert w["anon_growth_kb"] < ANON_GROWTH_KB, w
    assert "Traceback" not in log
