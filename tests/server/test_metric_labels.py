"""Issue 14, defect 3: unknown placement names became metric labels, no token needed — 3 000
requests with 64 random names each grew one worker by 163 MB and /metrics to 34 MB. Now label
values come only from the active rules (an unknown name counts as `unknown`): a flood of made-up
names against a real server leaves /metrics the size it was. Fails on the old code (it grew by
one series per name)."""

from __future__ import annotations

import random

from bench.procs import Edgeside


def test_a_placement_flood_does_not_grow_the_metrics(server: Edgeside) -> None:
    rng = random.Random(14)
    with server.client() as client:
        client.get("/v1/edge?p=nope-warmup&site=shop-fr")
        before = len(client.get("/metrics").content)
        for _ in range(100):
            names = ",".join(
                "".join(rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(60))
                for _ in range(16)
            )
            r = client.get(f"/v1/edge?p={names}&site=shop-fr")
            assert r.status_code in (204, 400, 422), r.status_code
        text = client.get("/metrics").text
    assert len(text.encode()) - before < 4096, len(text.encode()) - before
    assert 'placement="unknown"' in text
