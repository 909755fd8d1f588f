"""`POST /v1/events` on real servers: visible to decisions on every worker within a second."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from bench.procs import edgeside

DECIDE = {
    "visitor": {"ids": {"cookie": "c-alice"}},
    "context": {"site": "shop-fr"},
    "placements": ["cart_upsell"],
}


TOKEN = "live-test-admin-token"
TRUSTED = {"Authorization": f"Bearer {TOKEN}"}  # the admin token holds the `decide` scope


def variant(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> str:
    # A fresh connection each time: the kernel spreads them over the workers.
    with httpx.Client(base_url=url, timeout=5.0) as client:
        answer = client.post("/v1/decide", json=body, headers=headers).json()
    return str(answer["placements"][0]["variant"])


def post_events(
    url: str, events: list[dict[str, Any]], headers: dict[str, str] | None = None
) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=5.0) as client:
        return client.post("/v1/events", json={"events": events}, headers=headers)


def decisions_by_worker(logs: Path) -> dict[str, list[dict[str, Any]]]:
    """The decision log's records by worker pid (one file per worker process)."""
    by_pid: dict[str, list[dict[str, Any]]] = {}
    for path in logs.glob("decisions-*.ndjson"):
        pid = path.name.split("-")[2]
        lines = [json.loads(x) for x in path.read_text().splitlines() if x]
        by_pid.setdefault(pid, []).extend(lines)
    return by_pid


def test_an_event_on_one_worker_changes_decisions_on_every_worker(
    demo_copy: Path, tmp_path: Path
) -> None:
    # The decision log writes one file per worker process: it tells which worker did what.
    logs = tmp_path / "logs"
    config = tmp_path / "edgeside.yaml"
    config.write_text(f"decision_log: {{dir: {logs}, flush_interval_s: 0.05}}\n")
    env = {"EDGESIDE_ADMIN_TOKEN": TOKEN}
    with edgeside(demo_copy, workers=2, args=["--config", str(config)], env=env) as server:
        url = server.url
        # Warm both workers' memos with the "before" answer.
        before = {variant(url, DECIDE) for _ in range(10)}
        assert before == {"none"}
        cart = {
            "type": "add_to_cart",
            "visitor": {"ids": {"cookie": "c-alice"}},
            "content_id": "p-tent-1",
            "category": "camping",
        }
        answer = post_events(url, [cart])
        sent, sent_wall = time.monotonic(), time.time()  # the log's "t" is wall-clock seconds
        assert answer.status_code == 202, answer.text
        assert answer.json() == {
            "accepted": 1,
            "rejected": 0,
            "errors": [],
            "dropped": 0,
            "not_stored": [],
        }
        changed_after = None
        while time.monotonic() - sent < 3.0:
            if variant(url, DECIDE) != "none":
                changed_after = time.monotonic() - sent
                break
            time.sleep(0.02)
        assert changed_after is not None and changed_after < 1.0, changed_after
        # A second after the event, every answer has it — on whichever worker. Fresh connections
        # until the worker that did not take the event has answered one of them: the kernel hands
        # connections to either worker, but not in turn (one idle worker can take many in a row).
        time.sleep(max(0.0, sent + 1.0 - time.monotonic()))
        deadline = time.monotonic() + 10.0
        others: list[dict[str, Any]] = []
        by_pid: dict[str, list[dict[str, Any]]] = {}
        while not others:
            assert time.monotonic() < deadline, (
                f"no later decision from the other worker: {list(by_pid)}"
            )
            assert variant(url, DECIDE) != "none"
            time.sleep(0.1)  # the logs flush every 50 ms
            by_pid = decisions_by_worker(logs)
            accepting = [pid for pid, rs in by_pid.items() if any(r["kind"] == "event" for r in rs)]
            assert len(accepting) <= 1, accepting
            others = [
                r
                for pid, records in by_pid.items()
                if accepting and pid != accepting[0]
                for r in records
                if r["kind"] == "decision" and r["t"] >= sent_wall + 1.0
            ]
        # The worker that did not receive the event decided with it: worker A → worker B.
        assert all(r["placements"][0]["variant"] != "none" for r in others), others
        # The same person by another identifier sees the same cart (keyed by the canonical id).
        by_customer = dict(DECIDE, visitor={"ids": {"customer_id": "C00001"}})
        assert variant(url, by_customer, TRUSTED) != "none"

        # A purchase of the cart's item empties the cart: the upsell goes away again.
        buy = dict(cart, type="purchase")
        assert post_events(url, [buy]).status_code == 202
        deadline = time.monotonic() + 1.0
        while variant(url, DECIDE) != "none":
            assert time.monotonic() < deadline, "purchase did not empty the cart within 1 s"
            time.sleep(0.02)


def test_consent_withdrawal_makes_decisions_non_personalised(demo_copy: Path) -> None:
    body = {
        "visitor": {"ids": {"cookie": "c-alice"}},
        "context": {"site": "shop-fr"},
        "placements": ["home_hero"],
    }
    with edgeside(demo_copy, workers=2) as server:
        with httpx.Client(base_url=server.url, timeout=5.0) as client:
            personal = client.post("/v1/decide", json=body).json()
        assert personal["segments"], personal
        withdraw = {"type": "consent", "visitor": {"ids": {"cookie": "c-alice"}}, "value": False}
        assert post_events(server.url, [withdraw]).status_code == 202
        deadline = time.monotonic() + 1.0
        while True:
            with httpx.Client(base_url=server.url, timeout=5.0) as client:
                now = client.post("/v1/decide", json=body).json()
            if not now["segments"]:
                break
            assert time.monotonic() < deadline, now
            time.sleep(0.02)
        # Later events are not recorded for a visitor who withdrew.
        cart = {
            "type": "add_to_cart",
            "visitor": {"ids": {"cookie": "c-alice"}},
            "content_id": "p-1",
        }
        assert post_events(server.url, [cart]).status_code == 202
        time.sleep(0.3)
        assert variant(server.url, DECIDE) == "none"


def test_a_stranger_cannot_grant_consent_for_someone_else(demo_copy: Path) -> None:
    """Issue 14, defect 5: after Alice withdrew, an unauthenticated consent grant naming her
    customer_id re-enabled her personalisation. Fails on the old code (it was a 202)."""
    body = {
        "visitor": {"ids": {"cookie": "c-alice"}},
        "context": {"site": "shop-fr"},
        "placements": ["home_hero"],
    }
    with edgeside(demo_copy, workers=1, env={"EDGESIDE_ADMIN_TOKEN": TOKEN}) as server:
        url = server.url
        withdraw = {"type": "consent", "visitor": {"ids": {"cookie": "c-alice"}}, "value": False}
        assert post_events(url, [withdraw]).status_code == 202
        deadline = time.monotonic() + 2.0
        while httpx.post(url + "/v1/decide", json=body, timeout=5).json()["segments"]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        grant = {"type": "consent", "visitor": {"ids": {"customer_id": "C00001"}}, "value": True}
        r = post_events(url, [grant])
        assert r.status_code == 403, r.text
        assert "`decide`" in r.json()["error"]["message"]
        # A grant for a cookie that is not the caller's own: refused too.
        other = {"type": "consent", "visitor": {"ids": {"cookie": "c-alice"}}, "value": True}
        stranger = {"Cookie": "edgeside_id=c-mallory"}
        assert post_events(url, [other], stranger).status_code == 403
        time.sleep(0.3)
        assert not httpx.post(url + "/v1/decide", json=body, timeout=5).json()["segments"]
        # Her own browser may grant it again; so may a trusted server.
        own = {"Cookie": "edgeside_id=c-alice"}
        assert post_events(url, [other], own).status_code == 202
        assert post_events(url, [grant], TRUSTED).status_code == 202


def test_bad_batches_are_refused_with_reasons(demo_copy: Path) -> None:
    now = time.time()
    who = {"ids": {"cookie": "k-bad"}}
    with edgeside(demo_copy, workers=1) as server, server.client() as client:
        malformed = client.post(
            "/v1/events", content=b'{"events": [', headers={"content-type": "application/json"}
        )
        assert malformed.status_code == 400
        assert malformed.json()["error"]["code"] == "malformed_json"
        unknown_field = client.post("/v1/events", json={"events": [{"type": "view", "x": 1}]})
        assert unknown_field.status_code == 422
        assert unknown_field.json()["error"]["field"] == "$.events[0]"
        too_many = client.post("/v1/events", json={"events": [{"type": "view"}] * 501})
        assert too_many.status_code == 413
        assert too_many.json()["error"]["code"] == "too_many_events"
        huge = client.post(
            "/v1/events",
            content=b'{"events":[' + b" " * 600_000 + b"]}",
            headers={"content-type": "application/json"},
        )
        assert huge.status_code == 413
        mixed = client.post(
            "/v1/events",
            json={
                "events": [
                    {"type": "view", "visitor": who, "content_id": "a"},
                    {"type": "teleport", "visitor": who},
                    {"type": "view", "visitor": who, "ts": now + 3600},
                    {"type": "view", "visitor": who, "ts": now - 30 * 86400},
                    {"type": "view"},
                    {"type": "consent", "visitor": who, "value": 0.5},
                ]
            },
        )
        assert mixed.status_code == 202
        body = mixed.json()
        assert body["accepted"] == 1 and body["rejected"] == 5
        codes = [(e["index"], e["code"]) for e in body["errors"]]
        assert codes == [
            (1, "unknown_type"),
            (2, "ts_in_future"),
            (3, "ts_too_old"),
            (4, "no_visitor"),
            (5, "bad_value"),
        ]
        only_bad = client.post("/v1/events", json={"events": [{"type": "nope", "visitor": who}]})
        assert only_bad.status_code == 422
        assert only_bad.json()["error"]["code"] == "unknown_type"
        # A flood from one visitor is capped (200 per 10 s per worker by default).
        flood = [{"type": "view", "visitor": {"ids": {"cookie": "k-flood"}}, "content_id": "x"}]
        statuses = [client.post("/v1/events", json={"events": flood * 100}) for _ in range(3)]
        assert [r.json().get("accepted") for r in statuses] == [100, 100, 0]
        assert statuses[2].status_code == 429
        assert statuses[2].json()["error"]["code"] == "flood"
        metrics = client.get("/metrics").text
        assert 'edgeside_events_total{result="flood"} 100' in metrics


def test_a_stranger_with_live_activity_is_decided_for_themselves(demo_copy: Path) -> None:
    def upsell(client: httpx.Client, cookie: str) -> str:
        response = client.get(
            "/v1/edge?p=cart_upsell&site=shop-fr", headers={"Cookie": f"edgeside_id={cookie}"}
        )
        return dict(part.split("=") for part in response.headers["x-edge-decision"].split(";"))[
            "cart_upsell"
        ]

    with edgeside(demo_copy, workers=1) as server, server.client() as client:
        # Visitors the profiles do not know share one answer (the decision memo)…
        assert [upsell(client, f"stranger-{i}") for i in range(3)] == ["none"] * 3
        cart = {
            "type": "add_to_cart",
            "visitor": {"ids": {"cookie": "stranger-1"}},
            "content_id": "p-tent-1",
            "category": "camping",
        }
        assert post_events(server.url, [cart]).status_code == 202
        # …until one of them has a cart: then they are decided with it, within a second.
        deadline = time.monotonic() + 1.0
        while upsell(client, "stranger-1") == "none":
            assert time.monotonic() < deadline, "the cart did not reach the decision within 1 s"
            time.sleep(0.02)
        assert upsell(client, "stranger-9") == "none"
        hits = [
            line
            for line in client.get("/metrics").text.splitlines()
            if line.startswith('edgeside_memo_lookups_total{memo="decision",result="hit"}')
        ]
        assert hits and float(hits[0].split()[-1]) >= 2
