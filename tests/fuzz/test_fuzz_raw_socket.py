"""Raw bytes at the socket: invalid HTTP, huge and odd headers, random garbage, slow partial
requests. The answer is a 4xx or a closed connection, never a crash: afterwards the same workers are
alive, a normal request still succeeds, and no traceback was logged.
"""

from __future__ import annotations

import contextlib
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from bench.procs import Edgeside, edgeside
from tests.provekit import bounded, prove_data, worker_pids

__all__ = ["prove_data"]

EDGE = b"GET /v1/edge?p=home_hero&site=shop-fr HTTP/1.1\r\nHost: x\r\n"
DECIDE = b"POST /v1/decide HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"

CASES: dict[str, bytes] = {
    "empty-line": b"\r\n\r\n",
    "no-version": b"GET /v1/edge\r\n\r\n",
    "http-0.9": b"GET /\n",
    "bad-method": b"G\x00T / HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad-version": b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    "http2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "tls-hello": bytes.fromhex("16030100a5010000a10303") + bytes(160),
    "header-no-colon": EDGE + b"Cookie edgeside_id=c-alice\r\n\r\n",
    "header-nul": EDGE + b"Cookie: edgeside_id=c-\x00alice\r\n\r\n",
    "header-crlf-in-value": EDGE + b"X-Placements: home_hero\r\n\rX-Evil: 1\r\n\r\n",
    "header-obs-fold": EDGE + b"X-Placements: home_hero,\r\n home_recs\r\n\r\n",
    "header-latin1": EDGE + b"Cookie: edgeside_id=\xe9\xff\xfe\r\nX-Placements: \xff\r\n\r\n",
    "header-100k": EDGE + b"Cookie: edgeside_id=" + b"a" * 100_000 + b"\r\n\r\n",
    "headers-5000": EDGE + b"".join(b"X-H%d: v\r\n" % i for i in range(5000)) + b"\r\n",
    "url-64k": b"GET /v1/edge?p=" + b"home_hero," * 6500 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "path-traversal": b"GET /v1/fragments/..%2f..%2fetc%2fpasswd HTTP/1.1\r\nHost: x\r\n\r\n",
    "placements-10k": EDGE[:-2] + b"\r\nX-Placements: " + b"a," * 10_000 + b"\r\n\r\n",
    "content-length-negative": DECIDE + b"Content-Length: -5\r\n\r\n{}",
    "content-length-huge": DECIDE + b"Content-Length: 99999999999999999999\r\n\r\n{}",
    "content-length-twice": DECIDE + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    "content-length-short": DECIDE + b"Content-Length: 100\r\n\r\n{}",
    "chunked-bad": DECIDE + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "chunked-and-length": DECIDE
    + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    "body-1mb": DECIDE + b"Content-Length: 1048576\r\n\r\n" + b"[" * 1048576,
    "body-deep-json": DECIDE + b"Content-Length: 200000\r\n\r\n" + b"[" * 200_000,
    "body-invalid-utf8": DECIDE
    + b'Content-Length: 34\r\n\r\n{"placements":["\xff\xfe"],"x":1}    ',
    "pipelined-junk": EDGE + b"\r\n" + b"\x16\x03\x01garbage\r\n\r\n" * 3,
}


def exchange(url: str, payload: bytes, read_s: float = 2.0) -> bytes:
    """Send `payload`, then read until the server closes or goes quiet; the status line only."""
    host = urlsplit(url)
    with socket.create_connection((host.hostname, host.port), timeout=read_s) as s:
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
        except OSError:  # the server may close on us mid-send: that is an answer too
            return b""
        got = b""
        try:
            while len(got) < 65536:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return got.split(b"\r\n", 1)[0]


def status_of(line: bytes) -> int | None:
    parts = line.split()
    return int(parts[1]) if len(parts) > 1 and parts[0].startswith(b"HTTP/") else None


@pytest.fixture(scope="module")
def server(prove_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edgeside]:
    logs = tmp_path_factory.mktemp("raw-logs")
    with edgeside(prove_data, workers=2, log_dir=logs) as running:
        running.workers = worker_pids(running.proc.pid)  # type: ignore[attr-defined]
        yield running
        assert worker_pids(running.proc.pid) == running.workers  # type: ignore[attr-defined]
        assert "Traceback" not in running.output(), running.output()[-4000:]


def healthy(server: Edgeside) -> None:
    response = httpx.get(server.url + "/v1/edge?p=home_hero&site=shop-fr", timeout=5)
    assert response.status_code == 204


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_http_gets_4xx_or_a_close(server: Edgeside, name: str) -> None:
    status = status_of(exchange(server.url, CASES[name]))
    assert status is None or status < 500, (name, status)
    healthy(server)


def test_random_garbage_never_hurts(server: Edgeside) -> None:
    rng = random.Random(8)
    count = bounded("EDGESIDE_FUZZ_EXAMPLES", 250)
    statuses: dict[int | None, int] = {}
    seeds = list(CASES.values())
    for i in range(count):
        if i % 2:
            raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
        else:  # a real request with a few bytes flipped, cut or doubled
            raw = bytearray(rng.choice(seeds)[:4096])
            for _ in range(rng.randrange(1, 6)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            raw = raw[: rng.randrange(1, len(raw) + 1)] * rng.choice((1, 1, 2))
        status = status_of(exchange(server.url, bytes(raw), read_s=0.5))
        statuses[status] = statuses.get(status, 0) + 1
        assert status is None or status < 500, (status, bytes(raw[:200]))
    print(f"raw garbage: {count} connections, statuses {statuses}")
    healthy(server)


def test_slow_partial_requests_do_not_block_others(server: Edgeside) -> None:
    """Slowloris-ish: many connections trickling a header byte at a time for a few seconds while
    normal requests keep being answered quickly."""
    host = urlsplit(server.url)
    idle = []
    for _ in range(200):
        s = socket.create_connection((host.hostname, host.port), timeout=2)
        s.sendall(b"GET /v1/edge?p=home_hero HTTP/1.1\r\nHost: x\r\n")
        idle.append(s)
    worst = 0.0
    try:
        deadline = time.monotonic() + 4
        with httpx.Client(base_url=server.url, timeout=5) as client:
            while time.monotonic() < deadline:
                for s in idle:
                    with contextlib.suppress(OSError):
                        s.sendall(b"X")
                started = time.monotonic()
                assert client.get("/v1/edge?p=home_hero&site=shop-fr").status_code == 204
                worst = max(worst, time.monotonic() - started)
                time.sleep(0.2)
    finally:
        for s in idle:
            s.close()
    print(f"slow partial requests: 200 held open 4 s; worst normal request {worst * 1000:.1f} ms")
    assert worst < 1.0
    healthy(server)
