"""The upstream pull endpoint misbehaving, beyond tests/server/lifecycle/test_pull.py (garbage, a
hang before the headers, an outage): a body that drips a byte at a time, a body that never ends, a
length that lies, a redirect loop. Each is bounded in time and size, reported in the pull status,
leaves the active version and staging as they were, and never stops the node serving.
"""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from bench.procs import edgeside, free_port
from snapshots import store
from tests.provekit import prove_copy, prove_data
from tests.server.lifecycle.kit import AUTH, EDGE, TOKEN, active, status

# In the second test stream (tests/run-streams), which balances the two.
pytestmark = pytest.mark.slow

__all__ = ["prove_copy", "prove_data"]


class Misbehaving:
    """A tiny real HTTP server on 127.0.0.1 whose answer at /snap.tar is chosen by `mode`."""

    def __init__(self) -> None:
        self.mode = "drip"
        self.stop = threading.Event()
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                # OSError: the puller gave up on us, which is the point.
                with contextlib.suppress(OSError):
                    MODES[upstream.mode](self, upstream.stop)

            def log_message(self, *args: object) -> None:
                pass

        self.port = free_port()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.port}/snap.tar"

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def drip(h: http.server.BaseHTTPRequestHandler, stop: threading.Event) -> None:
    """Headers at once, then one byte every 0.1 s: each read is quick, the whole never ends."""
    h.send_response(200)
    h.send_header("Content-Length", str(1 << 20))
    h.end_headers()
    while not stop.wait(0.1):
        h.wfile.write(b"\0")
        h.wfile.flush()


def endless(h: http.server.BaseHTTPRequestHandler, stop: threading.Event) -> None:
    """No length, bytes as fast as they go, forever."""
    h.send_response(200)
    h.end_headers()
    block = b"\0" * 65536
    while not stop.is_set():
        h.wfile.write(block)


def liar(h: http.server.BaseHTTPRequestHandler, stop: threading.Event) -> None:
    """Promises a megabyte, sends a few bytes, closes."""
    h.send_response(200)
    h.send_header("Content-Length", str(1 << 20))
    h.end_headers()
    h.wfile.write(b"ustar" * 20)
    h.close_connection = True


def loop(h: http.server.BaseHTTPRequestHandler, stop: threading.Event) -> None:
    h.send_response(302)
    h.send_header("Location", h.path)
    h.send_header("Content-Length", "0")
    h.end_headers()


MODES: dict[str, Callable[[http.server.BaseHTTPRequestHandler, threading.Event], None]] = {
    "drip": drip,
    "endless": endless,
    "liar": liar,
    "loop": loop,
}
EXPECT = {
    "drip": "slower than",
    "endless": "exceeds",
    "liar": "truncated",
    "loop": "redirect",
}


@pytest.fixture()
def upstream() -> Iterator[Misbehaving]:
    u = Misbehaving()
    yield u
    u.close()


def last_error(client: httpx.Client) -> str:
    pulls = status(client)["pull"]
    assert isinstance(pulls, list)
    return str(pulls[0].get("last_error")) if pulls else ""


@pytest.mark.parametrize("mode", sorted(MODES))
def test_a_misbehaving_upstream_is_bounded_and_changes_nothing(
    upstream: Misbehaving, prove_copy: Path, tmp_path: Path, mode: str
) -> None:
    upstream.mode = mode
    env = {
        "EDGESIDE_ADMIN_TOKEN": TOKEN,
        "EDGESIDE_PULL": f"rules={upstream.url}",
        "EDGESIDE_PULL_INTERVAL_S": "0.3",
        "EDGESIDE_PULL_TIMEOUT_S": "0.4",  # per socket operation; a whole download gets 4 s
        "EDGESIDE_MAX_UPLOAD_BYTES": str(2 << 20),
    }
    with edgeside(prove_copy, workers=2, env=env, log_dir=tmp_path) as node:
        with httpx.Client(base_url=node.url, timeout=10, headers=AUTH) as c:
            before = active(c, "rules")
            started = time.monotonic()
            error = ""
            worst = 0.0
            while time.monotonic() - started < 12 and EXPECT[mode] not in error:
                t = time.monotonic()
                assert c.get(EDGE).status_code == 204
                worst = max(worst, time.monotonic() - t)
                error = last_error(c)
                time.sleep(0.2)
            took = time.monotonic() - started
            after = active(c, "rules")
        log = node.output()
    print(f"pull {mode}: reported after {took:.1f} s: {error!r}; worst edge {worst * 1000:.1f} ms")
    assert EXPECT[mode] in error, error
    assert after == before
    # Polling goes on: at most the download in flight when the node stopped is left in staging
    # (the next start's sweep removes it); refused downloads never pile up.
    staging = store.versions_dir(prove_copy, "rules") / store.STAGING
    leftovers = list(staging.iterdir()) if staging.exists() else []
    assert len(leftovers) <= 1 and all(p.name.startswith("pull-") for p in leftovers), leftovers
    assert worst < 1.0
    assert "Traceback" not in log, log[-3000:]
