"""Live activity through a real broker: an event posted to one node changes another's decision."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest

from bench.brokers import Nats
from bench.procs import edgeside
from tests.conftest import require_binary

from .fleetkit import (
    CART_DECIDE,
    HTTP,
    cart_event,
    fleet_nodes,
    metric,
    metric_line,
    node_config,
    post_events,
    start_all,
    variant,
    wait_for,
)

pytestmark = pytest.mark.integration


def test_events_reach_every_node_through_the_broker_outages_and_restarts(
    nats_bin: str, tmp_path: Path, node_data: Callable[[str], Path]
) -> None:
    broker = Nats(nats_bin, tmp_path / "late-nats")  # its port is chosen, nothing listens yet
    b_data = node_data("b")
    b_args = ["--config", str(node_config(tmp_path / "b.yaml", broker.url, "b"))]
    try:
        with fleet_nodes(broker.url, node_data, ["a"]) as (a,):
            with edgeside(b_data, args=b_args) as b:
                # Broker down at start: ready, said so, and node-local as before.
                ready = HTTP.get(a.url + "/readyz", timeout=5.0)
                assert ready.status_code == 200, ready.text
                assert any("fleet: broker unreachable" in w for w in ready.json()["warnings"])
                assert metric(a.url, "edgeside_fleet_broker_up") == 0.0
                assert post_events(a.url, [cart_event()]).status_code == 202
                wait_for(lambda: variant(a.url) != "none", timeout=2.0)
                assert variant(b.url) == "none"

                # The broker comes: what a kept in its outbox reaches b.
                broker.start()
                wait_for(lambda: variant(b.url) != "none", timeout=10.0)
                assert metric(a.url, "edgeside_fleet_broker_up") == 1.0
                warnings = HTTP.get(a.url + "/readyz", timeout=5.0).json()["warnings"]
                assert not any("fleet" in w for w in warnings), warnings
                published = 'result="published"'
                assert metric_line(a.url, "edgeside_fleet_live_messages_total", published) == 1

                # Connected: an event on b changes a's next decision within a second.
                chloe = dict(CART_DECIDE, visitor={"ids": {"cookie": "c-chloe"}})
                assert variant(a.url, chloe) == "none"
                assert post_events(b.url, [cart_event("c-chloe")]).status_code == 202
                took = wait_for(lambda: variant(a.url, chloe) != "none", timeout=3.0)
                assert took < 1.0, took

            # b is down; the fleet goes on.
            assert post_events(a.url, [cart_event("c-bruno")]).status_code == 202
            bruno = dict(CART_DECIDE, visitor={"ids": {"cookie": "c-bruno"}})
            wait_for(lambda: variant(a.url, bruno) != "none", timeout=2.0)
            time.sleep(0.3)  # published by a
            # b restarts on its data directory and resumes after the last message it applied.
            with edgeside(b_data, args=b_args) as b:
                took = wait_for(lambda: variant(b.url, bruno) != "none", timeout=5.0)
                assert variant(b.url) != "none"  # what it had before is still there
                # Only what it missed was applied: nothing before its stored position again.
                applied = 'result="applied"'
                assert metric_line(b.url, "edgeside_fleet_live_messages_total", applied) == 1
            assert took < 2.0, took
    finally:
        broker.stop()


FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"


def test_clock_skew_within_the_tolerance_is_accepted_beyond_it_refused(
    broker: Nats, tmp_path: Path, node_data: Callable[[str], Path]
) -> None:
    """Node b's wall clock runs 2 min ahead (libfaketime). Events are stamped by the node that
    accepted them; another node applies them while the stamp is within live.max_future_s (300 s)
    of its own clock, and refuses them, counted, beyond it."""
    require_binary("faketime")
    if not os.path.exists(FAKETIME_LIB):
        pytest.skip(f"{FAKETIME_LIB} missing (apt-get install faketime)")
    skew = 120.0
    specs = []
    for name, env in (
        ("a", {}),
        ("b", {"LD_PRELOAD": FAKETIME_LIB, "FAKETIME": f"+{skew:.0f}s",
               "FAKETIME_DONT_FAKE_MONOTONIC": "1"}),
    ):  # fmt: skip
        data = node_data(name)
        config = node_config(data / "fleet.yaml", broker.url, name)
        specs.append((data, ["--config", str(config)], env))
    with ExitStack() as stack:
        a, b = start_all(stack, specs)
        # Stamped by b's clock, 2 min ahead of a's: applied at a.
        assert post_events(b.url, [cart_event("c-alice")]).status_code == 202
        wait_for(lambda: variant(a.url) != "none", timeout=3.0)
        # And the other way: a's stamps are 2 min in b's past.
        chloe = dict(CART_DECIDE, visitor={"ids": {"cookie": "c-chloe"}})
        assert post_events(a.url, [cart_event("c-chloe")]).status_code == 202
        wait_for(lambda: variant(b.url, chloe) != "none", timeout=3.0)
        # 290 s ahead of b's clock: b accepts it (within its 300 s) and decides with it; for a it
        # is 410 s ahead, beyond the tolerance: refused and counted.
        ahead = time.time() + skew + 290
        assert post_events(b.url, [cart_event("c-bruno", ts=ahead)]).status_code == 202
        bruno = dict(CART_DECIDE, visitor={"ids": {"cookie": "c-bruno"}})
        wait_for(lambda: variant(b.url, bruno) != "none", timeout=2.0)
        future = 'result="future"'
        wait_for(
            lambda: metric_line(a.url, "edgeside_fleet_live_messages_total", future) == 1,
            timeout=3.0,
        )
        assert variant(a.url, bruno) == "none"
