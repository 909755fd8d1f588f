"""The live store's byte budget on a real server: a flood past the map, then withdrawals of consent.

Regression (issue 14, defect 4): 600 k events filled the 256 MB map in 11 s; a withdrawal then got
`202`, the log said `1 events dropped: MDB_MAP_FULL`, and the visitor stayed personalised; during
a flood 2 of 3 withdrawals were lost (drain batches all-or-nothing). Here the map is 2 MiB
(`EDGESIDE_LIVE__MAP_SIZE_MB`), so a flood of a few MB fills it in seconds; on the old code both
tests fail (the withdrawals are dropped, the visitors stay personalised).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.procs import edgeside

MAP_MB = 2
PAD = "p" * 240  # long content ids: each flooded visitor's record is ~300 bytes


def cookie(name: str) -> dict[str, Any]:
    return {"ids": {"cookie": name}}


def decide(client: httpx.Client, name: str) -> str:
    body = {"visitor": cookie(name), "context": {"site": "shop-fr"}, "placements": ["cart_upsell"]}
    answer = client.post("/v1/decide", json=body)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["placements"][0]["variant"])


def cart(name: str) -> dict[str, Any]:
    return {
        "type": "add_to_cart",
        "visitor": cookie(name),
        "content_id": "p-tent-1",
        "category": "camping",
    }


def withdraw(name: str) -> dict[str, Any]:
    return {"type": "consent", "visitor": cookie(name), "value": False}


def post(client: httpx.Client, events: list[dict[str, Any]]) -> dict[str, Any]:
    answer = client.post("/v1/events", json={"events": events})
    assert answer.status_code == 202, answer.text
    body: dict[str, Any] = answer.json()
    return body


def flood(client: httpx.Client, tag: str, batches: int) -> None:
    """`batches` × 500 views of distinct visitors (no flood limit applies): ~150 KB a batch."""
    for b in range(batches):
        events = [
            {"type": "view", "visitor": cookie(f"{tag}-{b}-{i}"), "content_id": f"{PAD}{i}"}
            for i in range(500)
        ]
        post(client, events)


def settle(client: httpx.Client, probe: str) -> None:
    """Wait until everything queued before now is written: the queue is first in, first out, so
    a fresh visitor's cart showing in decisions means the flood before it went through."""
    post(client, [cart(probe)])
    deadline = time.monotonic() + 60.0
    while decide(client, probe) == "none":
        assert time.monotonic() < deadline, "the live store stopped taking events"
        time.sleep(0.05)


def still_refused(client: httpx.Client, names: list[str], probe: str) -> None:
    """A cart after the withdrawal must not personalise again: the refusal is stored (not merely
    the visitor's record evicted by the flood)."""
    for name in names:
        post(client, [cart(name)])
    settle(client, probe)
    assert {n: decide(client, n) for n in names} == dict.fromkeys(names, "none")


def live_metrics(client: httpx.Client) -> dict[str, float]:
    """edgeside_live_events_total by result, and edgeside_live_store_bytes by what."""
    out: dict[str, float] = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(("edgeside_live_events_total{", "edgeside_live_store_bytes{")):
            labels, _, value = line.rpartition(" ")
            out[labels.split('"')[1]] = float(value)
    return out


def test_a_withdrawal_after_a_flood_that_filled_the_map_is_applied(demo_copy: Path) -> None:
    env = {"EDGESIDE_LIVE__MAP_SIZE_MB": str(MAP_MB), "EDGESIDE_LOG_LEVEL": "error"}
    with (
        edgeside(demo_copy, workers=1, env=env) as server,
        httpx.Client(base_url=server.url, timeout=30.0) as client,
    ):
        post(client, [cart("c-alice")])
        settle(client, "probe-0")
        assert decide(client, "c-alice") != "none"  # personalised by her cart
        flood(client, "a", 30)  # ~4.5 MB of records into a 2 MiB map
        settle(client, "probe-1")
        answer = post(client, [withdraw("c-alice")])
        assert answer["accepted"] == 1 and answer["dropped"] == 0, answer
        assert answer["not_stored"] == [], answer
        assert decide(client, "c-alice") == "none"
        still_refused(client, ["c-alice"], "probe-2")
        counts = live_metrics(client)
        assert counts.get("evicted", 0) > 0, counts
        assert counts.get("dropped", 0) == 0, counts
        assert 0 < counts["used"] <= counts["high_water"] < MAP_MB << 20, counts


def test_withdrawals_during_a_flood_are_none_lost(demo_copy: Path) -> None:
    env = {"EDGESIDE_LIVE__MAP_SIZE_MB": str(MAP_MB), "EDGESIDE_LOG_LEVEL": "error"}
    names = [f"c-w{i}" for i in range(6)]
    with edgeside(demo_copy, workers=1, env=env) as server:
        url = server.url
        with httpx.Client(base_url=url, timeout=30.0) as client:
            post(client, [cart(n) for n in names])
            settle(client, "probe-0")
            assert all(decide(client, n) != "none" for n in names)
            flood(client, "pre", 14)  # the map is full before the withdrawals come

            def flooding() -> None:
                with httpx.Client(base_url=url, timeout=30.0) as other:
                    flood(other, "during", 30)

            flooder = threading.Thread(target=flooding)
            flooder.start()
            try:
                # Each withdrawal in a batch of ordinary events, as a browser may send them.
                answers = [post(client, [cart(f"x-{n}"), withdraw(n)]) for n in names]
            finally:
                flooder.join()
            for answer in answers:
                assert answer["accepted"] == 2 and answer["dropped"] == 0, answer
                assert not [n for n in answer["not_stored"] if n["reason"] == "store_full"], answer
            settle(client, "probe-1")
            assert {n: decide(client, n) for n in names} == dict.fromkeys(names, "none")
            still_refused(client, names, "probe-2")
