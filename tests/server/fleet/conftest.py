"""Real infrastructure for the fleet tests: `nats-server -js` and an S3-compatible server on
loopback, started here. Skipped only when nats-server is missing and EDGESIDE_REQUIRE_INTEGRATION
is unset (SPEC §3); CI installs it (.ci/run), so there these tests run or fail."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.brokers import S3, Nats, nats_binary, nats_server, s3_server
from server.offline.demo import ensure_demo
from tests.conftest import require_binary
from tests.server.lifecycle.kit import KEY

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def nats_bin() -> str:
    return nats_binary() or require_binary("nats-server")


@pytest.fixture()
def broker(nats_bin: str, tmp_path: Path) -> Iterator[Nats]:
    """A broker of the test's own (for tests that need its streams empty or stop it)."""
    with nats_server(nats_bin, tmp_path / "nats") as server:
        yield server


@pytest.fixture(scope="module")
def module_broker(nats_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nats]:
    """One broker for a module whose tests keep to their own nodes and subjects."""
    with nats_server(nats_bin, tmp_path_factory.mktemp("nats")) as server:
        yield server


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(scope="session")
def fleet_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo store, signed with the lifecycle tests' key: nodes given that key verify it, nodes
    without one serve it as well (one build for every fleet test)."""
    data = tmp_path_factory.mktemp("fleet-demo")
    ensure_demo(data, KEY.encode())
    return data


@pytest.fixture()
def node_data(fleet_demo: Path, tmp_path: Path) -> Iterator[object]:
    """`node_data(name)`: a private copy of the demo store for one node."""

    def make(name: str) -> Path:
        target = tmp_path / "nodes" / name
        shutil.copytree(fleet_demo, target, symlinks=True)
        return target

    yield make
