"""deploy/edge-workers/worker.js on workerd, the open-source Workers runtime (npm `workerd`,
installed by `npm ci` in deploy/edge-workers), against a real edgeside process and the demo origin.

As on Cloudflare the worker sits on the origin's hostname: each request names the origin in its
Host header and the worker's `fetch(request)` goes there. workerd has no cache storage configured
(deploy/edge-workers/workerd.capnp), so every page is a MISS: the one-copy-per-decision caching is
tested on Node's stand-in (test_edge_worker.py); here it is the runtime itself that is under test.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from bench.procs import Edgeside, edgeside, free_port, process
from bench.proxies import DEPLOY, Running

from .helpers import decide, demo_cookies, keys_by_cookie, page, renders, variants

pytestmark = pytest.mark.integration

WORKERS = DEPLOY / "edge-workers"
WORKERD = WORKERS / "node_modules" / ".bin" / "workerd"


@pytest.fixture(scope="session")
def workerd_bin() -> str:
    # Not on PATH: npm installs it under deploy/edge-workers (package-lock.json pins the version).
    if not WORKERD.exists():
        reason = "workerd is not installed (cd deploy/edge-workers && npm ci)"
        if os.environ.get("EDGESIDE_REQUIRE_INTEGRATION"):
            pytest.fail(f"{reason}; EDGESIDE_REQUIRE_INTEGRATION is set")
        pytest.skip(f"{reason}; EDGESIDE_REQUIRE_INTEGRATION=1 makes this fail")
    return str(WORKERD)


@contextmanager
def _workerd(workerd_bin: str, work: Path, edgeside_url: str, origin: Running) -> Iterator[str]:
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = work / f"workerd-{port}.log"
    argv = [workerd_bin, "serve", str(WORKERS / "workerd.capnp")]
    argv += ["--socket-addr", f"http=127.0.0.1:{port}"]
    with process(argv, log=log, env={"EDGESIDE_URL": edgeside_url}, cwd=work) as proc:
        url = f"http://127.0.0.1:{port}"
        # Ready once a page comes through to the origin (the Host names it; without it the worker
        # would fetch from itself).
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"workerd exited: {log.read_text(errors='replace')[-3000:]}")
            try:
                host = {"Host": _host(origin)}
                probe = httpx.get(url + "/__origin/health", headers=host, timeout=1)
                if probe.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"workerd not ready: {log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)
        yield url


def _host(origin: Running) -> str:
    return f"127.0.0.1:{origin.port}"


@pytest.fixture(scope="module")
def worker(workerd_bin: str, work: Path, decider: Edgeside, origin: Running) -> Iterator[str]:
    with _workerd(workerd_bin, work / "workerd", decider.url, origin) as url:
        yield url


def test_known_visitors_get_their_personalised_page(
    worker: str, decider: Edgeside, origin: Running
) -> None:
    path = "/workerd/personal"
    groups = keys_by_cookie(decider.url, path, demo_cookies()[:60])
    assert len(groups) >= 2, groups
    visitors = [members[0] for members in list(groups.values())[:3]]
    for cookie in [*visitors, None]:
        expected = decide(decider.url, path, cookie)
        response = page(worker, path, cookie, Host=_host(origin))
        assert response.status_code == 200, response.text
        assert response.headers["x-edge-key"] == expected["x-edge-key"]
        assert response.headers["x-cache-status"] == "MISS"  # no cache in this workerd config
        assert variants(response) == dict(
            p.split("=", 1) for p in expected["x-edge-decision"].split(";")
        )
        seen = renders(origin.url, path)[-1]["headers"]
        assert seen == {
            "x-edge-key": expected["x-edge-key"],
            "x-edge-decision": expected["x-edge-decision"],
        }
    assert len({e["headers"]["x-edge-key"] for e in renders(origin.url, path)}) >= 3


def test_client_cannot_choose_its_decision_or_borrow_a_visitor(
    worker: str, decider: Edgeside, origin: Running
) -> None:
    path = "/workerd/forged"
    anonymous = decide(decider.url, path, None)
    forged = page(
        worker,
        path,
        Host=_host(origin),
        **{
            "X-Edge-Key": "chosen-by-attacker",
            "X-Edge-Decision": "home_hero=free_money",
            "X-Edge-Fallback": "none",
            "X-Visitor-Id": "cookie:c-chloe",
            "X-Site": "shop-uk",
            "X-Placements": "home_hero,cart_upsell",
        },
    )
    assert forged.status_code == 200
    assert forged.headers["x-edge-key"] == anonymous["x-edge-key"]
    assert renders(origin.url, path)[-1]["headers"] == {
        "x-edge-key": anonymous["x-edge-key"],
        "x-edge-decision": anonymous["x-edge-decision"],
    }


def test_edgeside_stopped_pages_still_served_with_the_fallback(
    workerd_bin: str, cdn_data: Path, tmp_path: Path, origin: Running
) -> None:
    path = "/workerd/down"
    with (
        edgeside(cdn_data, log_dir=tmp_path) as own,
        _workerd(workerd_bin, tmp_path, own.url, origin) as url,
    ):
        personal = page(url, path, "c-alice", Host=_host(origin))
        assert personal.status_code == 200 and personal.headers["x-edge-key"] != "fallback"
        own.proc.terminate()
        own.proc.wait(timeout=10)
        for cookie in ("c-bruno", None):
            # Forged decision headers: with no decision of its own, the worker must drop them.
            forged = {"X-Edge-Decision": "home_hero=free_money", "X-Edge-Key": "chosen"}
            response = page(url, path, cookie, Host=_host(origin), **forged)
            assert response.status_code == 200, response.text
            assert response.headers["x-edge-key"] == "fallback"
            assert 'data-fallback="edgeside-unavailable"' in response.text
    fallback = [e["headers"] for e in renders(origin.url, path)][1:]
    assert fallback == [{"x-edge-key": "fallback", "x-edge-fallback": "edgeside-unavailable"}] * 2


def test_decider_that_never_answers_costs_the_budget_not_the_page(
    workerd_bin: str, tmp_path: Path, origin: Running
) -> None:
    # A listener that accepts and never answers: the worker's 50 ms budget (AbortSignal.timeout)
    # must end the callout in workerd as it does on Node.
    port = free_port()
    code = (
        "import socket\n"
        f"s=socket.create_server(('127.0.0.1',{port}))\n"
        "conns=[]\n"
        "while True:\n    c,_=s.accept(); conns.append(c)\n"
    )
    with (
        process([sys.executable, "-c", code], log=tmp_path / "silent.log"),
        _workerd(workerd_bin, tmp_path, f"http://127.0.0.1:{port}", origin) as url,
    ):
        started = time.monotonic()
        response = page(url, "/workerd/silent", "c-alice", Host=_host(origin))
        elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert response.headers["x-edge-key"] == "fallback"
    assert elapsed < 2, elapsed
