"""Answers reused from a memo are added to the metrics by a background flush, not only at a scrape
(server/app.py `_flush_counts`): the service's pending `Served` stay few, so neither a scrape nor
the request that reaches the service's cap flushes thousands at once on the event loop. A fresh
decision is counted at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from server.app import _flush_counts
from server.config import Settings, load_secrets
from server.decide.world import World
from server.state import AppState


def test_reused_answers_reach_the_metrics_without_a_scrape(tmp_path: Path) -> None:
    state = AppState(Settings(data=str(tmp_path)), load_secrets({}))
    service = state.service
    ctx = state.builder.from_headers({}, "shop-fr", 0.0)
    # No rules: every placement at its default, counted as served — a fresh decision at once.
    served = service.serve(World(), state.builder.visitor_from_headers({}), ctx, ["home_hero"])
    assert state.metrics.decisions.values[("home_hero", "default")] == 1
    assert service._pending == []
    for _ in range(3):  # the same answer again, from a memo: kept to be counted later
        service.reuse(served, 0.0)
    assert service._pending == [served] and served.uses == 3
    assert state.metrics.decisions.values[("home_hero", "default")] == 1

    async def main() -> None:
        task = asyncio.create_task(_flush_counts(state, interval=0.001))
        for _ in range(1000):  # until flushed (bounded: a broken flush fails, never hangs)
            await asyncio.sleep(0.001)
            if not service._pending:
                break
        task.cancel()

    asyncio.run(main())
    assert service._pending == []
    assert state.metrics.decisions.values[("home_hero", "default")] == 4
