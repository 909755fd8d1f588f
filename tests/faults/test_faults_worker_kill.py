"""SIGKILL of one worker under load: uvicorn's supervisor starts a replacement, the other worker
keeps serving, and only requests in flight on the killed worker's connections fail (at the socket,
never with a 5xx).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench import load
from bench.procs import edgeside
from tests.conftest import fresh_client, require_binary
from tests.provekit import prove_data, worker_pids

__all__ = ["prove_data"]

# It asserts how many requests the load made: not beside another test stream.
pytestmark = pytest.mark.alone

CONNECTIONS = 16


def test_sigkill_of_a_worker_under_load(prove_data: Path, tmp_path: Path) -> None:
    require_binary("wrk")
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("\n".join(load.demo_cookies()) + "\n")
    with edgeside(prove_data, workers=2, log_dir=tmp_path) as server:
        before = worker_pids(server.proc.pid)
        assert len(before) == 2
        result: dict[str, Any] = {}

        def drive() -> None:  # about 1600 requests a second for 8 s over 16 connections
            result.update(load.wrk_paced(server.url, 8, CONNECTIONS, 10, cookies))

        # Fresh connections a second, each answered by whichever worker accepts it.
        probes: list[int | str] = []

        def probe() -> None:
            deadline = time.monotonic() + 8
            # A fresh connection per probe, without a client built per probe: that took CPU
            # from the load and the workers (tests/conftest.py: fresh_client).
            with fresh_client(timeout=3) as client:
                while time.monotonic() < deadline:
                    try:
                        r = client.get(server.url + "/v1/edge?p=home_hero&site=shop-fr")
                        probes.append(r.status_code)
                    except httpx.HTTPError as exc:
                        probes.append(type(exc).__name__)
                    time.sleep(0.02)

        threads = [threading.Thread(target=drive), threading.Thread(target=probe)]
        for t in threads:
            t.start()
        time.sleep(2.5)
        victim = before[0]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        replaced = None
        while time.monotonic() - killed_at < 15:
            now = worker_pids(server.proc.pid)
            if len(now) == 2 and victim not in now:
                replaced = time.monotonic() - killed_at
                break
            time.sleep(0.1)
        for t in threads:
            t.join(30)
        after = worker_pids(server.proc.pid)
        # The replacement serves: enough fresh connections land on both workers.
        statuses = {httpx.get(server.url + "/readyz", timeout=3).status_code for _ in range(40)}
        supervisor_alive = server.proc.poll() is None
    failed_probes = [p for p in probes if not isinstance(p, int)]
    print(
        f"worker kill: replaced after {replaced} s; wrk {result.get('requests')} requests, "
        f"{result.get('errors')} socket errors, {result.get('status_errors')} bad statuses; "
        f"probes {len(probes)}, failed {failed_probes}"
    )
    assert supervisor_alive
    assert replaced is not None and replaced < 10, "the supervisor did not replace the worker"
    assert before[1] in after, "the other worker was disturbed"
    assert statuses == {200}
    assert result["status_errors"] == 0, result  # no 5xx, ever
    assert result["requests"] > 5000
    # Only the killed worker's connections can fail, each at most a few times while reconnecting.
    assert result["errors"] <= 4 * CONNECTIONS, result
    assert all(p == 204 for p in probes if isinstance(p, int))
    assert len(failed_probes) <= 3, failed_probes
