"""Shared by the adversarial suites (tests/fuzz, load, faults, security): a demo store, worker
processes of a real server and their memory, as read from /proc."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bench.procs import children
from server.offline.demo import ensure_demo

ADMIN_TOKEN = "prove-admin-token-5f1c2a9e7b"


def bounded(name: str, default: int) -> int:
    """A CI-sized count, raised on demand (`EDGESIDE_FUZZ_EXAMPLES=5000 make unit`)."""
    return int(os.environ.get(name, default))


@pytest.fixture(scope="session")
def prove_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("prove-data")
    ensure_demo(data)
    return data


@pytest.fixture()
def prove_copy(prove_data: Path, tmp_path: Path) -> Path:
    """A private copy of the demo store for tests that change it."""
    target = tmp_path / "data"
    shutil.copytree(prove_data, target, symlinks=True)
    return target


def worker_pids(supervisor: int) -> list[int]:
    """uvicorn's worker processes (multiprocessing spawn children, not its resource tracker)."""
    found = []
    for pid in children(supervisor):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            found.append(pid)
    return sorted(found)


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (all resident pages, LMDB's shared file mappings included) and RssAnon (private)."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon"):
            out[key] = int(value.split()[0])
    return out
