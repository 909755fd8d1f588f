"""Real processes for benchmarks and integration tests: servers on free loopback ports."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from server.config import SETTINGS_ENV

ROOT = Path(__file__).resolve().parents[1]


def children(pid: int) -> list[int]:
    """The direct child processes of `pid` (from its main thread's /proc entry)."""
    try:
        raw = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in raw.split()]


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by `pid` and every live process under it. Measured
    around a load run, it gives CPU time per request: steadier than throughput on a shared
    machine, where a neighbour's burst lowers the rate but hardly the work per request."""
    total = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
        todo.extend(children(current))
    return total


# Ports handed out below the kernel's ephemeral range: a port the kernel picks for `bind(0)` is
# one it also gives outgoing connections, so between choosing it and the server binding it, a
# client connection (50 nodes each talking to a broker and S3 make hundreds) could take it and
# the server failed with "address already in use" (seen once in bench.fleet). Below the range,
# only another listener can race us, and a port is never handed out twice by this process.
_PORTS_LOW, _PORTS_HIGH = 20000, 32000
# Two test runs side by side (`make unit` runs two pytest streams) each get their own slice of
# that range, "LOW-HIGH" in EDGESIDE_TEST_PORTS: `_given` only keeps one process from handing a
# port out twice, so without slices both streams could pick the same free port at once.
PORTS_ENV = "EDGESIDE_TEST_PORTS"
_given: set[int] = set()


def _port_range() -> tuple[int, int]:
    raw = os.environ.get(PORTS_ENV, "")
    if not raw:
        return _PORTS_LOW, _PORTS_HIGH
    low, _, high = raw.partition("-")
    try:
        lo, hi = int(low), int(high)
    except ValueError:
        raise ValueError(f"{PORTS_ENV}={raw!r}: expected LOW-HIGH, e.g. 20000-25999") from None
    if not 1024 <= lo < hi <= 65535:
        raise ValueError(f"{PORTS_ENV}={raw!r}: expected 1024 <= LOW < HIGH <= 65535")
    return lo, hi + 1


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback port nothing listens on, outside the ephemeral range when it can be."""
    low, high = _port_range()
    high = min(high, max(_ephemeral_low(), low + 1))
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(low, high)
        if port not in _given and _bindable(port):
            _given.add(port)
            return port
    with socket.socket() as s:  # the low range is crowded: let the kernel choose
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    _given.add(port)
    return port


def wait_http(
    url: str,
    timeout: float = 30.0,
    ok: tuple[int, ...] = (200,),
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Poll until `url` answers one of `ok`; fail early, with the log, if the process died."""
    deadline = time.monotonic() + timeout
    last: object = None
    # One client for the whole wait: `httpx.get` builds a client, and its TLS context, per call
    # (~15 ms of CPU quiet, 66 ms at load 12, against 0.8 ms for a request on a kept client), so
    # polling every 50 ms took most of a core from the very server it waited for.
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:] if log else ""
                raise RuntimeError(f"process exited with {proc.returncode} before {url}:\n{tail}")
            try:
                status = client.get(url).status_code
                if status in ok:
                    return
                last = status
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.05)
    raise TimeoutError(f"{url} not ready after {timeout}s (last: {last})")


class Edgeside:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.proc = proc
        self.url = url
        self.log = log

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=5.0)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def process(
    argv: list[str], *, log: Path, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a command in its own session; on exit SIGTERM the group, then SIGKILL if it lingers."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env={k: v for k, v in {**os.environ, **(env or {})}.items() if k != SETTINGS_ENV},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextmanager
def edgeside(
    data: Path,
    *,
    workers: int = 1,
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
    ready: bool = True,
    log_dir: Path | None = None,
) -> Iterator[Edgeside]:
    """Start `edgeside serve` for real and stop it (SIGTERM, then SIGKILL) afterwards."""
    port = free_port()
    full_env = {"EDGESIDE_LOG_LEVEL": "warning", **(env or {})}
    argv = [sys.executable, "-m", "server.cli", "serve", "--data", str(data), "--port", str(port)]
    argv += ["--workers", str(workers), *(args or [])]
    log = (log_dir or data) / f"edgeside-{port}.log"
    with process(argv, log=log, env=full_env) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + ("/readyz" if ready else "/healthz"), proc=proc, log=log)
        yield Edgeside(proc, url, log)
