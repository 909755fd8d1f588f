"""Real processes for the CDN tests: the demo origin, edgeside, nginx and Varnish on loopback.

Module-scoped where tests only read (one stack per file keeps the suite well under a minute);
tests that stop edgeside or change its snapshots start their own. Every process is stopped by its
context manager whatever the test does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.procs import Edgeside, edgeside
from bench.proxies import Running, demo_origin, nginx
from server.offline.demo import ensure_demo
from tests.conftest import require_binary

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def nginx_bin() -> str:
    return require_binary("nginx")


@pytest.fixture(scope="session")
def varnishd_bin() -> str:
    return require_binary("varnishd")


@pytest.fixture(scope="session")
def cdn_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("cdn-data")
    ensure_demo(data)
    return data


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cdn")


@pytest.fixture(scope="module")
def origin(work: Path) -> Iterator[Running]:
    with demo_origin(work / "origin") as running:
        yield running


@pytest.fixture(scope="module")
def decider(cdn_data: Path, work: Path) -> Iterator[Edgeside]:
    with edgeside(cdn_data, log_dir=work) as proc:
        yield proc


@pytest.fixture(scope="module")
def proxy(nginx_bin: str, work: Path, decider: Edgeside, origin: Running) -> Iterator[Running]:
    edge_addr = decider.url.removeprefix("http://")
    origin_addr = f"127.0.0.1:{origin.port}"
    with nginx(nginx_bin, work / "nginx", edgeside=edge_addr, origin=origin_addr) as (running, _):
        yield running
