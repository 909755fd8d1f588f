"""Live activity through a real broker: an event posted to one node changes another's decision."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from bench.brokers import Nats
from bench.procs import edgeside

from .fleetkit import (
    CART_DECIDE,
    cart_event,
    fleet_nodes,
    metric,
    metric_line,
    node_config,
    post_events,
    variant,
    wait_for,
)

pytestmark = pytest.mark.integration


def test_an_event_on_node_a_changes_the_next_decision_on_node_b(
    broker: Nats, node_data: Callable[[str], Path]
) -> None:
    with fleet_nodes(broker.url, node_data, ["a", "b"]) as (a, b):
        assert variant(a.url) == variant(b.url) == "none"
        answer = post_events(a.url, [cart_event()])
        assert answer.status_code == 202, answer.text
        took = wait_for(lambda: variant(b.url) != "none", timeout=3.0)
        assert took < 1.0, took
        assert variant(a.url) == variant(b.url)


def test_a_node_serves_without_its_broker_and_catches_up_when_it_comes(
    nats_bin: str, tmp_path: Path, node_data: Callable[[str], Path]
) -> None:
    broker = Nats(nats_bin, tmp_path / "late-nats")  # its port is chosen, nothing listens yet
    try:
        with fleet_nodes(broker.url, node_data, ["a", "b"]) as (a, b):
            ready = httpx.get(a.url + "/readyz", timeout=5.0)
            assert ready.status_code == 200, ready.text
            assert any("fleet: broker unreachable" in w for w in ready.json()["warnings"])
            assert metric(a.url, "edgeside_fleet_broker_up") == 0.0
            # Events are accepted and decided on locally meanwhile.
            assert post_events(a.url, [cart_event()]).status_code == 202
            wait_for(lambda: variant(a.url) != "none", timeout=2.0)
            assert variant(b.url) == "none"

            broker.start()
            wait_for(lambda: variant(b.url) != "none", timeout=10.0)
            assert metric(a.url, "edgeside_fleet_broker_up") == 1.0
            warnings = httpx.get(a.url + "/readyz", timeout=5.0).json()["warnings"]
            assert not any("fleet" in w for w in warnings), warnings
            assert metric_line(a.url, "edgeside_fleet_live_messages_total", 'result="published"')
    finally:
        broker.stop()


def test_a_node_cut_off_resumes_from_its_position(
    broker: Nats, tmp_path: Path, node_data: Callable[[str], Path]
) -> None:
    b_data = node_data("b")
    config = node_config(tmp_path / "b.yaml", broker.url, "b")
    args = ["--config", str(config)]
    with fleet_nodes(broker.url, node_data, ["a"]) as (a,):
        with edgeside(b_data, args=args) as b:
            assert post_events(a.url, [cart_event("c-alice")]).status_code == 202
            wait_for(lambda: variant(b.url) != "none", timeout=3.0)
        # b is down; the fleet goes on.
        assert post_events(a.url, [cart_event("c-bruno")]).status_code == 202
        bruno = dict(CART_DECIDE, visitor={"ids": {"cookie": "c-bruno"}})
        wait_for(lambda: variant(a.url, bruno) != "none", timeout=2.0)
        time.sleep(0.3)  # published by a
        with edgeside(b_data, args=args) as b:
            took = wait_for(lambda: variant(b.url, bruno) != "none", timeout=5.0)
            assert variant(b.url) != "none"  # what it had before is still there
        assert took < 2.0, took
