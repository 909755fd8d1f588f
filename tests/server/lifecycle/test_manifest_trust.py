"""Issue 14, defects 1 and 2: a manifest is untrusted input. Crafted versions (a path that climbs
out of the store, CR/LF that would add a header, …) are refused by push and pull against real
servers, with the protocol shortcut on and off; and every byte of a response header passes one
check even if such a version reached the worker some other way (installed before this fix).

Each of these fails on the code before the fix: the push of `../../../escaped-version` was a 200
that installed outside the store, `x\\r\\nSet-Cookie: pwned=1` was served in `X-Edge-Snapshot`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.procs import edgeside
from server.asgi import header_safe
from server.decide.world import World
from server.metrics import _escape
from snapshots import store
from snapshots.errors import ManifestInvalid
from snapshots.manifest import check_version, valid_version
from tests.server.lifecycle.kit import (
    ADMIN,
    AUTH,
    KEY,
    TOKEN,
    active,
    resigned,
    rules_snapshot,
)
from tests.server.lifecycle.test_pull import Upstream, pull_state, wait_for

CRAFTED = [
    "../../../escaped-version",
    "../../../../nonexistent-dir/x",
    "x\r\nSet-Cookie: pwned=1",
    "x\nSet-Cookie: pwned=1",
    "x\rSet-Cookie: pwned=1",
    "/abs/path",
    "..",
    ".hidden",
    "a/b",
    "v1\x00",
    "v1;rules=other",
    "é",
    "",
    "x" * 300,
]


def test_the_version_grammar() -> None:
    for bad in CRAFTED:
        assert not valid_version(bad), bad
        with pytest.raises(ManifestInvalid):
            check_version(bad)
    for good in ("v1", "2026-12-04T23.30.00Z-3f2a", "rules_1.2-rc3", "a"):
        assert check_version(good) == good


def test_world_header_and_metric_labels_pass_the_checks() -> None:
    world = World(versions={"rules": "x\r\nSet-Cookie: pwned=1"})
    assert b"\r" not in world.snapshot_header and b"\n" not in world.snapshot_header
    assert header_safe(b"x-edge-snapshot", world.snapshot_header)
    assert not header_safe(b"x-edge-snapshot", b"x\r\nSet-Cookie: pwned=1")
    assert not header_safe(b"bad name", b"v")
    assert "\r" not in _escape("x\r\ny") and "\n" not in _escape("x\r\ny")


def _wait_ready(url: str) -> None:
    wait_for(lambda: httpx.get(url + "/readyz", timeout=5).status_code == 200, timeout=20)


def _raw_edge(url: str, repeats: int = 3) -> list[bytes]:
    """The same question several times on one keep-alive connection: the repeats are what the
    protocol shortcut answers from its memo. Returns each answer's header block."""
    host, port = url.removeprefix("http://").split(":")
    request = (
        b"GET /v1/edge?p=home_hero&site=shop-fr HTTP/1.1\r\nHost: x\r\n"
        b"Cookie: edgeside_id=c-trust-1\r\n\r\n"
    )
    answers: list[bytes] = []
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        for _ in range(repeats):
            sock.sendall(request)
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
            answers.append(buf)
    return answers


def _outside(root: Path) -> set[str]:
    """Every path under `root`'s parent (the test's tmp dir) except the data dir itself."""
    return {str(p) for p in root.parent.rglob("*") if root not in p.parents and p != root}


@pytest.fixture(params=[True, False], ids=["shortcut", "no-shortcut"])
def node(
    request: pytest.FixtureRequest, demo_copy: Path, tmp_path: Path
) -> Iterator[tuple[str, Path]]:
    config = tmp_path / "edgeside.json"
    config.write_text(json.dumps({"protocol_memo": request.param}))
    # Unsigned: the worse case (the "on an unsigned node, any" manifest is accepted).
    env = {"EDGESIDE_ADMIN_TOKEN": TOKEN}
    with edgeside(
        demo_copy, workers=1, env=env, args=["--config", str(config)], log_dir=tmp_path
    ) as server:
        yield server.url, demo_copy


def test_crafted_versions_pushed_are_refused_and_never_reach_a_header(
    node: tuple[str, Path], tmp_path: Path
) -> None:
    url, data = node
    snap = rules_snapshot(tmp_path)
    before_outside = _outside(data)
    with httpx.Client(base_url=url, timeout=60) as c:
        v0 = active(c, "rules")
        for version in CRAFTED:
            r = c.put(f"{ADMIN}/rules", content=resigned(snap, KEY, version=version), headers=AUTH)
            assert 400 <= r.status_code < 500, (version, r.status_code, r.text)
            assert r.json()["error"]["code"], r.text
            assert active(c, "rules") == v0
        rb = c.post(f"{ADMIN}/rules/rollback", headers=AUTH)
        assert rb.status_code < 500
        for version in ("..", ".staging", "x%0d%0aSet-Cookie:%20pwned=1"):
            r = c.post(f"{ADMIN}/rules/activate/{version}", headers=AUTH)
            assert 400 <= r.status_code < 500, (version, r.status_code)
    assert _outside(data) - before_outside == set()
    assert not any("escaped-version" in p for p in _outside(data))
    for head in _raw_edge(url):
        assert head.startswith(b"HTTP/1.1 204"), head
        assert b"set-cookie" not in head.lower() and b"pwned" not in head, head
    for v in store.list_versions(data, "rules"):
        assert valid_version(v), v


def test_crafted_version_pulled_is_refused(demo_copy: Path, tmp_path: Path) -> None:
    upstream = Upstream()
    try:
        upstream.body = resigned(rules_snapshot(tmp_path), KEY, version="../../../escaped-version")
        env = {
            "EDGESIDE_ADMIN_TOKEN": TOKEN,
            "EDGESIDE_PULL": f"rules={upstream.url}",
            "EDGESIDE_PULL_INTERVAL_S": "0.3",
        }
        before = _outside(demo_copy)
        with (
            edgeside(demo_copy, workers=1, env=env, log_dir=tmp_path) as server,
            httpx.Client(base_url=server.url, timeout=30) as c,
        ):
            v0 = active(c, "rules")
            wait_for(lambda: "refused" in str(pull_state(c).get("last_error")), timeout=20)
            assert "not a version name" in str(pull_state(c)["last_error"])
            assert active(c, "rules") == v0
        assert not any("escaped-version" in p for p in _outside(demo_copy) - before)
    finally:
        upstream.close()


def test_a_crafted_version_already_on_disk_is_never_served(demo_copy: Path, tmp_path: Path) -> None:
    """A node upgraded from before this fix may hold a badly named version and point `active`
    (or its history) at it: start-up and rollback refuse to use it."""
    vdir = store.versions_dir(demo_copy, "rules")
    good = store.active_version(demo_copy, "rules")
    assert good is not None
    bad = "x\r\nSet-Cookie: pwned=1"
    shutil.copytree(vdir / good, vdir / bad)
    link = demo_copy / "rules" / "active"
    tmp_link = demo_copy / "rules" / ".active.tmp"
    os.symlink(os.path.join("versions", bad), tmp_link)
    os.replace(tmp_link, link)
    assert store.active_version(demo_copy, "rules") is None
    assert bad not in store.list_versions(demo_copy, "rules")
    env = {"EDGESIDE_ADMIN_TOKEN": TOKEN}
    with edgeside(demo_copy, workers=1, env=env, ready=False, log_dir=tmp_path) as server:
        for head in _raw_edge(server.url, repeats=2):
            assert head.startswith(b"HTTP/1.1 204"), head
            assert b"pwned" not in head and b"set-cookie" not in head.lower(), head
