"""Fleet status from real heartbeats: the admin route and `edgeside fleet status` list every node
with its versions, flag a kind on which nodes diverge, and a node that stopped beating."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.brokers import Nats
from bench.procs import stop
from server.fleet.messages import Heartbeat
from server.fleet.status import render, report
from snapshots import archive
from tests.integration.helpers import demo_cookies
from tests.security.test_security_review import BAD_AUTH
from tests.server.lifecycle.kit import rules_snapshot

from .fleetkit import (
    ADMIN_TOKEN,
    CART_DECIDE,
    HTTP,
    cart_event,
    fleet_nodes,
    post_events,
    variant,
    wait_for,
)

pytestmark = pytest.mark.integration
chloe = dict(CART_DECIDE, visitor={"ids": {"cookie": "c-chloe"}})
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def fleet(url: str) -> dict[str, Any]:
    answer = HTTP.get(url + "/v1/admin/fleet", headers=AUTH, timeout=5.0)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def edge_key(url: str, cookie: str) -> str:
    headers = {
        "X-Original-URI": "/",
        "X-Placements": "home_hero,home_recs,cart_upsell",
        "X-Site": "shop-fr",
        "Cookie": f"edgeside_id={cookie}",
    }
    answer = HTTP.get(url + "/v1/edge", headers=headers, timeout=5.0)
    assert answer.status_code == 204
    return answer.headers["x-edge-key"]


def status_cli(broker: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "server.cli", "fleet", "status", "--broker", broker]
    return subprocess.run(
        [*argv, "--stale-after", str(STALE_S)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


# Long enough for a loaded machine's heartbeats (every 0.5 s), short enough not to wait long
# for the node that stops.
STALE_S = 3.0


def test_fleet_status_shows_versions_divergence_and_stale_nodes(
    broker: Nats, node_data: Callable[[str], Path], tmp_path: Path
) -> None:
    """Two nodes: comparing needs two (the table of more: the test below)."""
    with fleet_nodes(broker.url, node_data, ["a", "b"], stale_after_s=STALE_S) as (a, b):
        for bad in BAD_AUTH:
            assert HTTP.get(a.url + "/v1/admin/fleet", headers=bad).status_code == 401, bad
        wait_for(lambda: len(fleet(a.url)["nodes"]) == 2, timeout=20.0)
        body = fleet(b.url)
        assert body["ok"] and not body["divergent"] and not body["stale"], body
        assert {n["node"] for n in body["nodes"]} == {"a", "b"}
        assert all(n["ready"] and n["broker"] == "up" for n in body["nodes"])
        assert all(len(v) == 1 for v in body["versions"].values()), body["versions"]
        done = status_cli(broker.url)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "2 nodes; converged" in done.stdout

        # One answer everywhere: converged, the same request has the same key on every node,
        # also for a visitor whose cart was posted to one node only.
        assert post_events(a.url, [cart_event("c-chloe")]).status_code == 202
        wait_for(lambda: variant(b.url, chloe) != "none", timeout=10.0)
        for cookie in [*demo_cookies()[:12], "c-chloe", "a-stranger"]:
            keys = {edge_key(n.url, cookie) for n in (a, b)}
            assert len(keys) == 1, (cookie, keys)

        # A new rules version pushed to one node only: the fleet diverges on rules.
        tar = tmp_path / "rules.tar"
        archive.pack(rules_snapshot(tmp_path, key=None), tar)
        pushed = HTTP.put(
            a.url + "/v1/admin/snapshots/rules", content=tar.read_bytes(), headers=AUTH, timeout=30
        )
        assert pushed.status_code == 200, pushed.text
        wait_for(lambda: fleet(b.url)["divergent"] == ["rules"], timeout=20.0)
        # A node that stops beating is flagged stale after stale_after_s (and no longer counts
        # for divergence: what it ran is not known any more).
        stop(b.proc)
        wait_for(lambda: fleet(a.url)["stale"] == ["b"], timeout=20.0)
        assert fleet(a.url)["divergent"] == []
        done = status_cli(broker.url)
        assert done.returncode == 1
        assert "NOT converged" in done.stdout and "b STALE" in done.stdout, done.stdout


def _beat(node: str, rules: str, age_s: float, now: float) -> Heartbeat:
    versions = {"profiles": "p1", "content": "c1", "rules": rules}
    return Heartbeat(node, now - age_s, now - 100, True, versions, 0.0, 7, "up", [])


def test_the_table_flags_divergent_kinds_and_stale_nodes() -> None:
    now = 1_000_000.0
    beats = [
        _beat("n1", "r2", 0.5, now),
        _beat("n2", "r1", 1.0, now),
        _beat("n3", "r2", 0.2, now),
        _beat("gone", "r0", 60.0, now),  # stale: its r0 does not count
    ]
    rep = report(beats, now, stale_after_s=STALE_S)
    assert rep.divergent == ["rules"] and rep.stale == ["gone"] and not rep.ok
    assert rep.versions["rules"] == {"r1": 1, "r2": 2}
    text = render(rep)
    assert "rules: r1 on 1, r2 on 2  DIVERGENT" in text
    assert "gone STALE" in text and "4 nodes; NOT converged" in text
    fresh = report(beats[:1] + beats[2:3], now, stale_after_s=STALE_S)
    assert fresh.ok and "2 nodes; converged" in render(fresh)


def test_fleet_status_says_when_the_broker_is_unreachable(nats_bin: str, tmp_path: Path) -> None:
    down = Nats(nats_bin, tmp_path / "never-started")
    done = status_cli(down.url)
    assert done.returncode == 2 and "error:" in done.stderr
