"""The fleet's infrastructure as real processes on loopback: `nats-server -js` and an
S3-compatible server (moto's server mode), for the fleet tests and `python -m bench.fleet`."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .procs import free_port, process, wait_http


def nats_binary() -> str | None:
    return shutil.which("nats-server") or next(
        (p for p in ("/usr/sbin/nats-server", "/usr/local/sbin/nats-server") if Path(p).exists()),
        None,
    )


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} not open after {timeout}s")


class Nats:
    """A `nats-server` with JetStream on a fixed port and store directory: `stop()` and `start()`
    again bring the same broker back with its streams (an outage, not a new broker)."""

    def __init__(
        self, binary: str, work: Path, port: int | None = None, args: tuple[str, ...] = ()
    ) -> None:
        self.binary = binary
        self.work = work
        self.args = args  # e.g. ("--user", "u", "--pass", "p") or ("--auth", "token")
        self.port = port or free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self._cm: object | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        argv = [self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port)]
        argv += ["-sd", str(self.work / "store"), "-n", f"edgeside-test-{self.port}", *self.args]
        log = self.work / f"nats-{self.starts}.log"
        cm = process(argv, log=log)
        self.proc = cm.__enter__()
        self._cm = cm
        wait_port(self.port, self.proc, log)

    def stop(self) -> None:
        cm, self._cm = self._cm, None
        if cm is not None:
            cm.__exit__(None, None, None)  # type: ignore[attr-defined]
        self.proc = None


@contextmanager
def nats_server(binary: str, work: Path, args: tuple[str, ...] = ()) -> Iterator[Nats]:
    server = Nats(binary, work, args=args)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class S3:
    def __init__(self, url: str) -> None:
        self.url = url


@contextmanager
def s3_server(work: Path) -> Iterator[S3]:
    """moto's S3-compatible server in its own process (any credentials are accepted)."""
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    log = work / f"moto-{port}.log"
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with process(argv, log=log) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/moto-api/", proc=proc, log=log, timeout=60.0)
        yield S3(url)
