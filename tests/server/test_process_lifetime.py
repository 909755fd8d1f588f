"""Issue 14, defect 9: SIGKILL of the master left its workers running (PPID 1, still serving) and a
restart failed with `Address already in use`. Now workers arm a parent-death signal: real
processes, a real SIGKILL, a restart on the same port. Fails on the old code (the workers stay)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import httpx

from bench.procs import edgeside, process, wait_http
from tests.provekit import worker_pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for this purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_workers_die_with_a_killed_master_and_the_port_is_free(
    demo_copy: Path, tmp_path: Path
) -> None:
    with edgeside(demo_copy, workers=2, log_dir=tmp_path) as server:
        port = server.url.rsplit(":", 1)[1]
        workers = worker_pids(server.proc.pid)
        assert len(workers) == 2, workers
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.1)
        assert not any(_alive(p) for p in workers), "workers outlived their master"
    # A restart on the same port binds it (the old workers held it: `Address already in use`).
    argv = [sys.executable, "-m", "server.cli", "serve", "--data", str(demo_copy), "--port", port]
    log = tmp_path / "restart.log"
    with process(argv, log=log, env={"EDGESIDE_LOG_LEVEL": "warning"}) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/healthz", proc=proc, log=log)
        assert httpx.get(url + "/healthz", timeout=10).status_code == 200
