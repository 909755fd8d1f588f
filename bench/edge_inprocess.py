"""CPU per `/v1/edge` request on the realistic load, in-process: where a first question's time goes.

    python -m bench.edge_inprocess [--requests 2000] [--batches 6] [--profiles 200000]
        [--no-edge-memo] [--no-decision-memo] [--no-log] [--profile] [--wire] [--make-only]

Builds the app on `bench.http`'s realistic store (built once, cached) and sends it requests made
as `bench/wrk_edge.lua`'s `real` mode makes them (returning visitors with a long tail over the
population, 30 % never seen, 20 k pages, a full browser `Cookie`, CDN headers) through the path
the HTTP protocol takes: `Remembering.recall`, then the route's `decide`, then the bytes it would
write (`MemoProtocol._wire`) — no sockets, no wrk, so
its CPU time per request is steady where throughput on a shared machine is not (issue 15: each
memo layer measured on and off, each lever before and after). `--wire` feeds each request as
bytes to the HTTP protocol itself (`MemoProtocol` on uvloop, a transport that writes nowhere):
the same plus httptools' parse, uvicorn's callbacks and the shortcut's checks; the difference
between the two runs is what the protocol costs. `--profile` prints a cProfile of one batch.
Last line: JSON, CPU µs per request (median and min over the batches) and each memo's hit ratio.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import json
import pstats
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec

from server.app import build_app
from server.config import DecisionLogSettings, Settings, load_secrets
from server.edge import protocol
from server.edge.remembering import PROTOCOL_ROUTES, Remembering

from .http import realistic_store

SITES = ("shop-fr", "shop-de", "shop-uk")
SETS = (
    "home_hero,home_recs",
    "home_hero",
    "article_sidebar,home_hero",
    "cart_upsell,home_recs,home_hero",
)
LANGUAGES = ("fr-FR,fr;q=0.9,en;q=0.8", "de-DE,de;q=0.9", "en-GB,en;q=0.9")
BROWSERS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
)
COUNTRIES = ("FR", "DE", "GB", "ES", "IT", "NL", "BE")
Request = tuple[bytes, list[tuple[bytes, bytes]]]


def realistic_request(rnd: random.Random, n: int, population: int, seed: int) -> Request:
    """One request as `wrk_edge.lua`'s `real()` makes it: (query string, headers)."""
    if rnd.random() < 0.3:
        cookie = f"anon-{rnd.randint(1, 10**9)}"  # never seen
    else:
        r = rnd.random()
        cookie = f"k{seed}-{int(population * r * r):x}"  # a long tail over the population
    site = rnd.choice(SITES)
    p = rnd.random()
    page = int(20000 * p * p) + 1
    ga = rnd.randint(100000000, 999999999)
    cookies = (
        f"_ga=GA1.2.{ga}.1733300000; _gid=GA1.2.{ga % 7919}.1733390000; edgeside_id={cookie}; "
        f"cart={n % 13}; consent=analytics%3Dyes; session={ga:08x}{n:08x}"
    )
    headers = [
        (b"host", b"127.0.0.1:8080"),
        (b"cookie", cookies.encode()),
        (b"cf-ipcountry", rnd.choice(COUNTRIES).encode()),
        (b"x-original-uri", f"/p/{page}?utm_source=news&ref={n % 7}".encode()),
        (b"referer", f"https://{site}.example/p/{rnd.randint(1, 20000)}".encode()),
        (b"user-agent", rnd.choice(BROWSERS).encode()),
        (b"accept-language", rnd.choice(LANGUAGES).encode()),
        (b"accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        (b"accept-encoding", b"gzip, br"),
        (b"x-forwarded-for", f"203.0.{n % 256}.{rnd.randint(1, 254)}".encode()),
        (b"x-forwarded-proto", b"https"),
    ]
    return f"site={site}&p={rnd.choice(SETS)}".encode(), headers


class _Writer:
    """What `MemoProtocol._wire` reads of its protocol: uvicorn's default headers."""

    server_state = SimpleNamespace(
        default_headers=[(b"date", b"Sat, 05 Dec 2026 08:00:00 GMT"), (b"server", b"uvicorn")]
    )


def answer(route: Remembering, request: Request) -> None:
    """What the HTTP protocol does with a well-formed GET /v1/edge, short of writing it: the
    answer, then its bytes as they would be written (`MemoProtocol._wire`)."""
    query, headers = request
    known, key = route.lookup("GET", "/v1/edge", query, headers)
    if known is None:
        known = protocol._decide(route, "/v1/edge", query, headers, key)
    if known is not None:
        protocol.MemoProtocol._wire(_Writer, known.response)  # type: ignore[arg-type]


class _Transport:
    """What uvicorn's protocol asks of its transport, writing nowhere: no socket, no kernel."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += 1

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default
        )

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None: ...


def through_protocol(app: Any, route: Remembering) -> tuple[Callable[[bytes], None], _Transport]:
    """`--wire`: what each request's bytes (`request_bytes`) are fed to — the HTTP protocol
    edgeside serves with (`MemoProtocol` on uvloop, one kept-alive connection): httptools' parse,
    uvicorn's callbacks, the shortcut, the write — all but the kernel's part of a request."""
    import asyncio

    import uvloop
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    config = Config(app=app, access_log=False, lifespan="off")
    config.load()
    made = protocol.MemoProtocol(
        config, ServerState(), {PROTOCOL_ROUTES: {protocol.EDGE_PATH: route}}, _loop=loop
    )
    made.access_log = False  # (under pytest, its log capture reads as an access log to write)
    made.edge = route
    transport = _Transport()
    made.connection_made(transport)  # type: ignore[arg-type]

    return made.data_received, transport


def _unanswered(request: object) -> None:
    pass


def _as_is(request: Request) -> Request:
    return request


def request_bytes(request: Request) -> bytes:
    """A request as the bytes a proxy sends (made before the timing starts)."""
    query, headers = request
    head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    return b"GET /v1/edge?" + query + b" HTTP/1.1\r\n" + head + b"\r\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000, help="per batch (and warm-up)")
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--profiles", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "edgeside-bench"
    )
    parser.add_argument("--no-edge-memo", action="store_true")
    parser.add_argument("--no-decision-memo", action="store_true")
    parser.add_argument(
        "--no-log", action="store_true", help="without the decision log (on by default)"
    )
    parser.add_argument(
        "--make-only",
        action="store_true",
        help="make the requests and answer none: what `bench.instructions` subtracts",
    )
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one batch")
    parser.add_argument(
        "--wire",
        action="store_true",
        help="feed each request's bytes through the HTTP protocol (MemoProtocol) instead",
    )
    args = parser.parse_args(argv)
    data = realistic_store(args.profiles, args.seed, args.cache)
    settings = Settings(data=str(data))
    if args.no_log:
        settings = msgspec.structs.replace(settings, decision_log=DecisionLogSettings(dir=""))
    app = build_app(settings, load_secrets({}))
    route = app.hot["/v1/edge"]
    assert isinstance(route, Remembering)
    state = route.route.state  # type: ignore[attr-defined]
    state.holder.refresh()
    state.open_live()
    if args.no_edge_memo:
        route.memo.enabled = False
    if args.no_decision_memo:
        state.service.memo.enabled = False
    # What a request is handed over as, made before timing starts, and what answers it.
    prepare: Callable[[Request], Any] = _as_is
    ask: Callable[[Any], None] = functools.partial(answer, route)
    wire = None
    if args.wire:
        prepare = request_bytes
        ask, wire = through_protocol(app, route)
    if args.make_only:
        ask = _unanswered
    gc.collect()
    gc.freeze()  # as the worker does after start-up (server/app.py `_tune_gc`)
    gc.set_threshold(50_000, 20, 20)
    rnd = random.Random(args.seed)
    n = 0

    def batch() -> list[Any]:
        nonlocal n
        out = [
            prepare(realistic_request(rnd, n + i, args.profiles, args.seed))
            for i in range(args.requests)
        ]
        n += args.requests
        return out

    for request in batch():  # warm-up: caches, page matchers, LMDB pages
        ask(request)
    # Every cyclic collection during the timed batches, by generation: how long the longest took
    # and how many there were (what stalls a worker's loop, issue 15 item 4).
    gc_count = [0, 0, 0]
    gc_max = [0.0, 0.0, 0.0]
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
            return
        generation = info["generation"]
        gc_count[generation] += 1
        gc_max[generation] = max(gc_max[generation], time.perf_counter() - gc_started[0])

    gc.callbacks.append(on_gc)
    times = []
    for _ in range(args.batches):
        requests = batch()
        started = time.process_time()
        for request in requests:
            ask(request)
        times.append((time.process_time() - started) / len(requests) * 1e6)
    gc.callbacks.remove(on_gc)
    young = len(gc.get_objects(0))
    if args.profile:
        profiler = cProfile.Profile()
        requests = batch()
        profiler.enable()
        for request in requests:
            ask(request)
        profiler.disable()
        stats = pstats.Stats(profiler, stream=sys.stdout)
        calls = stats.total_calls  # type: ignore[attr-defined]
        print(f"{calls / len(requests):.1f} Python calls per request")
        stats.sort_stats("cumulative").print_stats(25)
    hits = {
        name: round(memo.hits / (memo.hits + memo.misses), 3)
        for name, memo in state.memos.items()
        if memo.hits + memo.misses
    }
    state.close_live()
    print(
        json.dumps(
            {
                "cpu_us_per_request": round(statistics.median(times), 1),
                "cpu_us_per_request_min": round(min(times), 1),
                "batches": [round(t, 1) for t in times],
                "memo_hit_ratio": hits,
                "gc_collections_by_generation": gc_count,
                "max_gc_ms_by_generation": [round(t * 1000, 1) for t in gc_max],
                "young_objects_at_end": young,
                "edge_memo": not args.no_edge_memo,
                "decision_memo": not args.no_decision_memo,
                "decision_log": not args.no_log,
                "wire": args.wire,
                "requests": n,
                # (--wire) responses the protocol wrote itself: one per request unless it left
                # some to the ASGI app, which no running loop answers here.
                "protocol_writes": None if wire is None else wire.written,
                "loadavg": Path("/proc/loadavg").read_text().split()[:3],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
