"""A demo data directory built once per session, and a real server process on it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.procs import Edgeside, edgeside
from server.offline.demo import ensure_demo

ADMIN_TOKEN = "test-admin-token-0123456789"


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("demo-data")
    ensure_demo(data)
    return data


@pytest.fixture()
def demo_copy(demo_data: Path, tmp_path: Path) -> Path:
    """A private copy of the demo store for tests that change it."""
    target = tmp_path / "data"
    shutil.copytree(demo_data, target, symlinks=True)
    return target


@pytest.fixture(scope="session")
def server(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edgeside]:
    logs = tmp_path_factory.mktemp("logs")
    with edgeside(demo_data, env={"EDGESIDE_ADMIN_TOKEN": ADMIN_TOKEN}, log_dir=logs) as proc:
        yield proc
