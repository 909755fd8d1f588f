"""Live activity through a real broker: an event posted to one node changes another's decision."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest

from bench.brokers import Nats
from bench.procs import stop
from tests.conftest import require_binary

from .fleetkit import (
    CART_DECIDE,
    HTTP,
    cart_event,
    metric,
    metric_line,
    node_config,
    post_events,
    start_all,
    variant,
    wait_for,
)

pytestmark = pytest.mark.integration


FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"
SKEW_S = 120.0


def decide_for(cookie: str) -> dict[str, object]:
    return dict(CART_DECIDE, visitor={"ids": {"cookie": cookie}})


def test_events_reach_every_node_through_outages_restarts_and_clock_skew(
    nats_bin: str, tmp_path: Path, node_data: Callable[[str], Path]
) -> None:
    """Two nodes, b's wall clock 2 min ahead (libfaketime), the broker not there at first."""
    require_binary("faketime")
    if not os.path.exists(FAKETIME_LIB):
        pytest.skip(f"{FAKETIME_LIB} missing (apt-get install faketime)")
    broker = Nats(nats_bin, tmp_path / "late-nats")  # its port is chosen, nothing listens yet
    skewed = {
        "LD_PRELOAD": FAKETIME_LIB,
        "FAKETIME": f"+{SKEW_S:.0f}s",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    specs = []
    for name, env in (("a", {}), ("b", skewed)):
        data = node_data(name)
        specs.append(
            (data, ["--config", str(node_config(tmp_path / f"{name}.yaml", broker.url, name))], env)
        )
    lines = "edgeside_fleet_live_messages_total"
    try:
        with ExitStack() as stack:
            a, b = start_all(stack, specs)
            # Broker down at start: ready, said so, and node-local as before.
            ready = HTTP.get(a.url + "/readyz")
            assert ready.status_code == 200, ready.text
            assert any("fleet: broker unreachable" in w for w in ready.json()["warnings"])
            assert metric(a.url, "edgeside_fleet_broker_up") == 0.0
            assert post_events(a.url, [cart_event()]).status_code == 202
            wait_for(lambda: variant(a.url) != "none", timeout=10.0)
            assert variant(b.url) == "none"

            # The broker comes: what a kept in its outbox reaches b (a's stamps are in b's past).
            broker.start()
            wait_for(lambda: variant(b.url) != "none", timeout=10.0)
            assert metric(a.url, "edgeside_fleet_broker_up") == 1.0
            warnings = HTTP.get(a.url + "/readyz").json()["warnings"]
            assert not any("fleet" in w for w in warnings), warnings
            assert metric_line(a.url, lines, 'result="published"') == 1

            # Connected: an event on b, stamped 2 min ahead of a's clock (within live.max_future_s),
            # changes a's next decision within a second.
            assert variant(a.url, decide_for("k-skew")) == "none"
            assert post_events(b.url, [cart_event("k-skew")]).status_code == 202
            took = wait_for(lambda: variant(a.url, decide_for("k-skew")) != "none", timeout=10.0)
            # The goal (1 s p99) is measured by bench.fleet; this bound leaves a loaded CI machine
            # room while still failing a follower that polls instead of waiting for messages.
            assert took < 2.0, took

            # 290 s ahead of b's clock: b accepts it (within its 300 s) and decides with it; for a
            # it is 410 s ahead, beyond the tolerance: refused and counted.
            ahead = time.time() + SKEW_S + 290
            assert post_events(b.url, [cart_event("k-ahead", ts=ahead)]).status_code == 202
            wait_for(lambda: variant(b.url, decide_for("k-ahead")) != "none", timeout=10.0)
            wait_for(lambda: metric_line(a.url, lines, 'result="future"') == 1, timeout=10.0)
            assert variant(a.url, decide_for("k-ahead")) == "none"

            # b is down; the fleet goes on.
            stop(b.proc)
            assert post_events(a.url, [cart_event("k-down")]).status_code == 202
            wait_for(lambda: variant(a.url, decide_for("k-down")) != "none", timeout=10.0)
            time.sleep(0.3)  # published by a
            # b restarts on its data directory and resumes after the last message it applied.
            with ExitStack() as again:
                (b,) = start_all(again, specs[1:])
                took = wait_for(
                    lambda: variant(b.url, decide_for("k-down")) != "none", timeout=10.0
                )
                assert variant(b.url) != "none"  # what it had before is still there
                # Only what it missed was applied: nothing before its stored position again.
                assert metric_line(b.url, lines, 'result="applied"') == 1
            assert took < 5.0, took
    finally:
        broker.stop()
