"""Pull mode against a tiny real HTTP server on 127.0.0.1: ETag polling, garbage and hanging
upstreams, and a node that starts on its last good snapshot while the upstream is down."""

from __future__ import annotations

import hashlib
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.procs import edgeside, free_port
from server.lifecycle.pull import PullSpecError, parse_pull
from tests.server.lifecycle.kit import AUTH, EDGE, TOKEN, active, rules_snapshot, status, tar_of


class Upstream:
    """Serves `body` at /snap.tar with a strong ETag; `mode` switches to garbage or hanging."""

    def __init__(self) -> None:
        self.body = b""
        self.mode = "ok"
        self.hits: list[tuple[str, int]] = []  # (If-None-Match, status)
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if upstream.mode == "hang":
                    time.sleep(5)
                    return
                body = upstream.body if upstream.mode == "ok" else b"<html>502 bad gateway</html>"
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                inm = self.headers.get("If-None-Match", "")
                status = 304 if inm == etag else 200
                upstream.hits.append((inm, status))
                self.send_response(status)
                self.send_header("ETag", etag)
                if status == 200:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if status == 200:
                    self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.port = free_port()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.port}/snap.tar"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def upstream() -> Iterator[Upstream]:
    u = Upstream()
    yield u
    u.close()


def wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.1)
    raise TimeoutError("condition not met")


def pull_state(client: httpx.Client) -> dict[str, object]:
    pulls = status(client)["pull"]
    assert isinstance(pulls, list)
    return pulls[0] if pulls else {}


def test_pull_follows_etags_refuses_garbage_survives_hangs_and_outages(
    upstream: Upstream, demo_copy: Path, tmp_path: Path
) -> None:
    first = rules_snapshot(tmp_path, key=None)
    upstream.body = tar_of(first)
    env = {
        "EDGESIDE_ADMIN_TOKEN": TOKEN,
        "EDGESIDE_PULL": f"rules={upstream.url}",
        "EDGESIDE_PULL_INTERVAL_S": "0.3",
        "EDGESIDE_PULL_TIMEOUT_S": "0.5",
    }
    with edgeside(demo_copy, workers=2, env=env, log_dir=tmp_path) as node, node.client() as c:
        wait_for(lambda: pull_state(c).get("version") is not None)
        v1 = active(c, "rules")
        assert v1 is not None and v1 in (first / "manifest.json").read_text()
        # Unchanged upstream: conditional requests answered 304, nothing re-downloaded.
        wait_for(lambda: sum(s == 304 for _, s in upstream.hits) >= 2)
        assert sum(s == 200 for _, s in upstream.hits) == 1

        # Garbage: refused with the reason in the status listing; the active version stays.
        upstream.mode = "garbage"
        wait_for(lambda: "refused" in str(pull_state(c).get("last_error")))
        assert active(c, "rules") == v1
        assert "not a readable tar" in str(pull_state(c)["last_error"])

        # Hanging upstream: bounded by the socket timeout; the node keeps serving.
        upstream.mode = "hang"
        wait_for(lambda: "timed out" in str(pull_state(c).get("last_error")), timeout=15)
        assert c.get(EDGE).status_code == 204

        # A new snapshot upstream is picked up.
        second = rules_snapshot(tmp_path, key=None)
        upstream.body = tar_of(second)
        upstream.mode = "ok"
        wait_for(lambda: active(c, "rules") not in (v1, None), timeout=15)
        v2 = active(c, "rules")
        assert v2 is not None and v2 in (second / "manifest.json").read_text()

    # Upstream down: a restarted node serves its last good snapshot from disk.
    upstream.close()
    env["EDGESIDE_PULL"] = f"rules=http://127.0.0.1:{free_port()}/gone.tar"
    with edgeside(demo_copy, workers=2, env=env, log_dir=tmp_path) as node, node.client() as c:
        assert active(c, "rules") == v2
        r = c.get(EDGE)
        assert r.status_code == 204 and f"rules={v2}" in r.headers["x-edge-snapshot"]
        wait_for(lambda: "gone.tar" in str(pull_state(c).get("url")))
        wait_for(lambda: pull_state(c).get("last_error") is not None)


def test_pull_specs_are_checked() -> None:
    assert parse_pull(["rules=http://x/a.tar content=https://y/b.tar"]) == [
        ("rules", "http://x/a.tar"),
        ("content", "https://y/b.tar"),
    ]
    with pytest.raises(PullSpecError, match="KIND=URL"):
        parse_pull(["http://x/a.tar"])
    with pytest.raises(PullSpecError, match="http"):
        parse_pull(["rules=ftp://x"])


def test_a_node_without_a_signing_key_accepts_unsigned_and_says_so(
    demo_copy: Path, tmp_path: Path
) -> None:
    env = {"EDGESIDE_ADMIN_TOKEN": TOKEN}
    with edgeside(demo_copy, env=env, log_dir=tmp_path) as node, node.client() as c:
        r = c.put(
            "/v1/admin/snapshots/rules",
            content=tar_of(rules_snapshot(tmp_path, key=None)),
            headers=AUTH,
        )
        assert r.status_code == 200, r.text
        assert "no EDGESIDE_SIGNING_KEY" in r.json()["signature"]
        assert c.get("/v1/admin/snapshots", headers=AUTH).json()["signed"] is False
