"""Live activity through a real broker: an event posted to one node changes another's decision."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bench.brokers import Nats

from .fleetkit import cart_event, fleet_nodes, post_events, variant, wait_for

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
