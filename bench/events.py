"""Live-activity benchmark: event ingest over HTTP, the latency `recent.*` adds to a decision,
and the time from an event to a changed decision across workers.

`python -m bench.events [--workers 2] [--seconds 3]` builds the demo data in a temporary
directory and starts a real server. Human lines first; the last line is one JSON object:

- ``ingest_events_per_s``: accepted events per second, batches of 100 over keep-alive
  connections from a few client threads (the 202 answer; applying happens off the request path);
- ``decide_p50_us_no_live`` / ``decide_p50_us_live``: one in-process decision of three placements
  for a known visitor with the live store off, and on with a populated record — side by side;
- ``stamp_check_us``: the answer memo's per-hit check, `LiveStore.stamp` (best of 5 timeit runs);
- ``event_to_decision_s_p50`` / ``_max``: an `add_to_cart` posted on one connection until a
  fresh connection (any worker) gets the changed `cart_upsell` decision.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import timeit
from pathlib import Path

import httpx

import rules
from bench.procs import edgeside
from server.config import Settings
from server.decide.service import DecisionService
from server.decide.world import WorldHolder
from server.live.events import live_key
from server.live.store import Change, LiveStore
from server.metrics import Metrics
from server.offline.demo import ensure_demo
from server.visitor import Visitor


def ingest(url: str, seconds: float, threads: int = 4, batch: int = 100) -> float:
    accepted = [0] * threads
    stop = time.monotonic() + seconds

    def worker(n: int) -> None:
        with httpx.Client(base_url=url, timeout=10.0) as client:
            i = 0
            while time.monotonic() < stop:
                events = [
                    {
                        "type": "view",
                        # Many visitors: the per-visitor flood cap is not what is measured.
                        "visitor": {"ids": {"cookie": f"bench-{n}-{i}-{j}"}},
                        "content_id": f"p-{j}",
                        "category": "running",
                    }
                    for j in range(batch)
                ]
                r = client.post("/v1/events", json={"events": events})
                accepted[n] += r.json().get("accepted", 0)
                i += 1

    started = time.monotonic()
    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(accepted) / (time.monotonic() - started)


def decide_latency(data: Path, rounds: int = 20000) -> tuple[float, float, float]:
    holder = WorldHolder(str(data))
    holder.refresh()
    world = holder.current
    with tempfile.TemporaryDirectory() as tmp:
        store = LiveStore(Path(tmp), 64 << 20)
        plain = DecisionService(Metrics(), Settings().time_budget_ms)
        live = DecisionService(Metrics(), Settings().time_budget_ms)
        live.live = store
        visitor = Visitor(ids={"cookie": "c-alice"})
        profile = plain.lookup(world, visitor)
        key = live_key(profile.id if profile else None, visitor)
        assert key is not None
        store.apply(
            [
                Change(key, "view", time.time(), content_id=f"p-{i}", category="running")
                for i in range(20)
            ]
            + [Change(key, "add_to_cart", time.time(), content_id="p-1")],
            time.time(),
        )
        ctx = rules.Context(site="shop-fr", now=time.time())
        placements = ["home_hero", "home_recs", "cart_upsell"]
        out = []
        for service in (plain, live, plain, live):  # interleaved: drift hits both alike
            samples = []
            for _ in range(rounds // 2):
                t0 = time.perf_counter_ns()
                service.serve(world, visitor, ctx, placements)
                samples.append(time.perf_counter_ns() - t0)
            out.append(statistics.median(samples) / 1000.0)
        n = 200_000
        stamp_us = min(timeit.repeat(lambda: store.stamp(key), number=n, repeat=5)) / n * 1e6
        store.close()
    world.close()
    return (out[0] + out[2]) / 2, (out[1] + out[3]) / 2, stamp_us


def event_to_decision(url: str, trials: int = 10) -> list[float]:
    times = []
    for n in range(trials):
        cookie = f"e2d-{n}-{time.time_ns()}"
        body = {
            "visitor": {"ids": {"cookie": cookie}},
            "context": {"site": "shop-fr"},
            "placements": ["cart_upsell"],
        }
        with httpx.Client(base_url=url, timeout=5.0) as client:
            client.post("/v1/decide", json=body)
            event = {
                "type": "add_to_cart",
                "visitor": {"ids": {"cookie": cookie}},
                "content_id": "p-1",
            }
            client.post("/v1/events", json={"events": [event]})
        sent = time.monotonic()
        while time.monotonic() - sent < 5.0:
            with httpx.Client(base_url=url, timeout=5.0) as fresh:
                answer = fresh.post("/v1/decide", json=body).json()
            if answer["placements"][0]["variant"] != "none":
                break
        times.append(time.monotonic() - sent)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        ensure_demo(data)
        no_live, with_live, stamp_us = decide_latency(data)
        print(f"decision p50: {no_live:.1f} µs without live store, {with_live:.1f} µs with")
        print(f"memo stamp check: {stamp_us:.3f} µs")
        with edgeside(data, workers=args.workers) as server:
            rate = ingest(server.url, args.seconds)
            print(f"ingest: {rate:,.0f} events/s accepted over HTTP ({args.workers} workers)")
            # The ingest run leaves a backlog being applied; measure visibility on a quiet node.
            time.sleep(2.0)
            e2d = event_to_decision(server.url)
            print(f"event → changed decision on any worker: p50 {statistics.median(e2d):.3f} s")
    print(
        json.dumps(
            {
                "bench": "events",
                "workers": args.workers,
                "ingest_events_per_s": round(rate),
                "decide_p50_us_no_live": round(no_live, 2),
                "decide_p50_us_live": round(with_live, 2),
                "recent_adds_us": round(with_live - no_live, 2),
                "stamp_check_us": round(stamp_us, 3),
                "event_to_decision_s_p50": round(statistics.median(e2d), 3),
                "event_to_decision_s_max": round(max(e2d), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
