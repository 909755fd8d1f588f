"""deploy/edge-workers/worker.js on Node (deploy/edge-workers/local.mjs) against real edgeside and
the origin: the one-copy-per-decision caching, with an in-memory stand-in for `caches.default`.
The real Workers runtime is test_workerd.py. CI installs Node (for workerd), so these skip only
without it and without EDGESIDE_REQUIRE_INTEGRATION."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench.procs import Edgeside, free_port, process, wait_http
from bench.proxies import DEPLOY, Running
from tests.conftest import require_binary

from .helpers import (
    assert_personalised_from_cache,
    demo_cookies,
    keys_by_cookie,
    page,
    render_number,
    renders,
    zipf_load,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def node() -> str:
    return require_binary("node")


@contextmanager
def _worker(node: str, work: Path, edgeside_url: str, origin: Running) -> Iterator[str]:
    port = free_port()
    argv = [node, str(DEPLOY / "edge-workers" / "local.mjs"), "--port", str(port)]
    argv += ["--origin", origin.url, "--edgeside", edgeside_url]
    log = work / f"worker-{port}.log"
    with process(argv, log=log, cwd=work) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/__origin/health", proc=proc, log=log, timeout=20)
        yield url


@pytest.fixture(scope="module")
def worker(node: str, work: Path, decider: Edgeside, origin: Running) -> Iterator[str]:
    with _worker(node, work, decider.url, origin) as url:
        yield url


def test_worker_caches_one_copy_per_decision(
    worker: str, decider: Edgeside, origin: Running
) -> None:
    path = "/w/segments"
    groups = keys_by_cookie(decider.url, path, demo_cookies()[:120])
    key, members = max(groups.items(), key=lambda kv: len(kv[1]))
    assert len(members) >= 2
    first, second = page(worker, path, members[0]), page(worker, path, members[1])
    assert first.status_code == second.status_code == 200
    assert (first.headers["x-edge-key"], second.headers["x-edge-key"]) == (key, key)
    assert (first.headers["x-cache-status"], second.headers["x-cache-status"]) == ("MISS", "HIT")
    assert render_number(first) == render_number(second)
    other = next(m for k, m in groups.items() if k != key)[0]
    assert render_number(page(worker, path, other)) != render_number(first)
    seen = [e["headers"] for e in renders(origin.url, path)]
    assert len(seen) == 2 and all("x-edge-decision" in h for h in seen)


def test_worker_fails_open_when_edgeside_is_down(
    node: str, tmp_path: Path, origin: Running
) -> None:
    with _worker(node, tmp_path, f"http://127.0.0.1:{free_port()}", origin) as url:
        response = page(url, "/w/down", "c-alice")
        assert response.status_code == 200
        assert response.headers["x-edge-key"] == "fallback"
        assert 'data-fallback="edgeside-unavailable"' in response.text


def test_worker_names_no_placements() -> None:
    assert "PLACEMENTS" not in (DEPLOY / "edge-workers" / "worker.js").read_text()


def test_worker_uri_only_callout_personalises_from_cache(worker: str, decider: Edgeside) -> None:
    # local.mjs configures SITE=shop-fr; the worker sends the URI, never placements.
    assert_personalised_from_cache(decider.url, zipf_load(worker, 400), site="shop-fr")
