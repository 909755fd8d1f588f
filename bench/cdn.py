"""What a CDN keeps when pages are personalised through edgeside: hit ratio and copies per page.

`python -m bench.cdn` starts, on loopback, the demo origin, a real edgeside and a real nginx with
the config from `deploy/nginx/`, then sends N visitors (default 10 000) to M demo pages chosen with
a Zipf distribution. Visitors are demo profiles (by their cookie), anonymous cookies and visitors
who refused consent, in fixed proportions, all from a seeded generator.

Measured side by side in the same run, same client, same nginx:
- personalised: nginx → edgeside callout → page cache keyed by URL + decision key → origin;
- plain: the same page cache keyed by URL only, no callout (the price of personalisation).

The last line is JSON: `hit_ratio` (after the warm-up share of requests; target ≥ 0.95),
`hit_ratio_cold` (all requests), `variants_per_page_max`, `p50_ms_personalised`, `p50_ms_plain`,
plus counts. Bounded: a fixed number of requests and `--max-seconds` for each phase.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

from server.offline.demo import DEMO_DIR

from .procs import edgeside
from .proxies import demo_origin, find_binary, nginx

# How the visitors split: known profiles, anonymous cookies, known visitors who said no.
KNOWN_SHARE = 0.6
NO_CONSENT_SHARE = 0.1


@dataclass(frozen=True)
class Visit:
    path: str
    headers: dict[str, str]


@dataclass
class Outcome:
    path: str
    status: int
    cache: str
    key: str
    seconds: float


def demo_cookies() -> list[str]:
    cookies: dict[str, None] = {}
    for path in sorted((DEMO_DIR / "profiles").glob("*.ndjson")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                cookie = json.loads(line).get("ids", {}).get("cookie")
                if isinstance(cookie, str):
                    cookies.setdefault(cookie, None)
    return list(cookies)


def plan(visitors: int, pages: int, zipf_s: float, seed: int) -> list[Visit]:
    """One page view per visitor; the page drawn from Zipf(s) over `pages` pages."""
    rng = random.Random(seed)
    known = demo_cookies()
    if not known:
        raise SystemExit(f"bench.cdn: no demo profiles found under {DEMO_DIR / 'profiles'}")
    weights = [1.0 / (rank + 1) ** zipf_s for rank in range(pages)]
    paths = rng.choices([f"/p/{rank}" for rank in range(pages)], weights=weights, k=visitors)
    visits = []
    for i, path in enumerate(paths):
        draw = rng.random()
        if draw < KNOWN_SHARE:
            headers = {"Cookie": f"edgeside_id={rng.choice(known)}"}
        elif draw < KNOWN_SHARE + NO_CONSENT_SHARE:
            headers = {"Cookie": f"edgeside_id={rng.choice(known)}", "X-Consent": "0"}
        else:
            headers = {"Cookie": f"edgeside_id=anon-{seed}-{i}"}
        visits.append(Visit(path, headers))
    return visits


def run(base: str, visits: list[Visit], concurrency: int, max_seconds: float) -> list[Outcome]:
    """Send the visits in order over `concurrency` connections; stop early at `max_seconds`."""
    deadline = time.monotonic() + max_seconds
    chunks = [visits[i::concurrency] for i in range(concurrency)]

    def worker(chunk: list[Visit]) -> list[Outcome]:
        out: list[Outcome] = []
        with httpx.Client(base_url=base, timeout=10.0) as client:
            for visit in chunk:
                if time.monotonic() > deadline:
                    break
                started = time.perf_counter()
                response = client.get(visit.path, headers=visit.headers)
                elapsed = time.perf_counter() - started
                out.append(
                    Outcome(
                        visit.path,
                        response.status_code,
                        response.headers.get("x-cache-status", ""),
                        response.headers.get("x-edge-key", ""),
                        elapsed,
                    )
                )
        return out

    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(worker, chunks))
    return [o for chunk in results for o in chunk]


def hit_ratio(outcomes: list[Outcome]) -> float:
    if not outcomes:
        return 0.0
    # STALE/UPDATING are served from the cache too; only MISS/EXPIRED/BYPASS went to the origin.
    hits = sum(o.cache in ("HIT", "STALE", "UPDATING", "REVALIDATED") for o in outcomes)
    return hits / len(outcomes)


def p50_ms(outcomes: list[Outcome]) -> float:
    return round(statistics.median(o.seconds for o in outcomes) * 1000, 3) if outcomes else 0.0


def summarise(
    personal: list[Outcome], plain: list[Outcome], warmup: float, origin_renders: int
) -> dict[str, object]:
    cut_personal = int(len(personal) * warmup)
    cut_plain = int(len(plain) * warmup)
    keys: dict[str, set[str]] = {}
    for o in personal:
        keys.setdefault(o.path, set()).add(o.key)
    per_page = [len(k) for k in keys.values()]
    return {
        "requests": len(personal),
        "pages_seen": len(keys),
        "hit_ratio": round(hit_ratio(personal[cut_personal:]), 4),
        "hit_ratio_cold": round(hit_ratio(personal), 4),
        "hit_ratio_plain": round(hit_ratio(plain[cut_plain:]), 4),
        "variants_per_page_max": max(per_page, default=0),
        "variants_per_page_mean": round(statistics.fmean(per_page), 2) if per_page else 0.0,
        "p50_ms_personalised": p50_ms(personal[cut_personal:]),
        "p50_ms_plain": p50_ms(plain[cut_plain:]),
        "non_200": sum(o.status != 200 for o in personal + plain),
        "fallback_pages": sum(o.key == "fallback" for o in personal),
        "origin_renders": origin_renders,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cdn", description=__doc__)
    parser.add_argument("--visitors", type=int, default=10_000)
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent of page popularity")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--warmup", type=float, default=0.2, help="share of requests not counted")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-seconds", type=float, default=300.0, help="per phase")
    parser.add_argument("--data", help="edgeside data directory (default: a fresh demo build)")
    args = parser.parse_args(argv)

    nginx_bin = find_binary("nginx")
    if nginx_bin is None:
        print("bench.cdn: nginx is not installed", file=sys.stderr)
        return 2
    visits = plan(args.visitors, args.pages, args.zipf, args.seed)
    with tempfile.TemporaryDirectory(prefix="edgeside-bench-cdn-") as tmp:
        work = Path(tmp)
        if args.data:
            data = Path(args.data).resolve()  # processes start in another directory
        else:
            from server.offline.demo import ensure_demo

            data = work / "data"
            ensure_demo(data)
        with (
            demo_origin(work / "origin") as origin,
            edgeside(data, log_dir=work) as decider,
            nginx(
                nginx_bin,
                work / "nginx",
                edgeside=decider.url.removeprefix("http://"),
                origin=f"127.0.0.1:{origin.port}",
                plain=True,
            ) as (proxy, plain_url),
        ):
            if plain_url is None:
                raise RuntimeError("nginx started without the plain baseline server")
            personal = run(proxy.url, visits, args.concurrency, args.max_seconds)
            plain = run(plain_url, visits, args.concurrency, args.max_seconds)
            log = httpx.get(origin.url + "/__origin/log", timeout=10).json()
            renders = sum(1 for e in log if e["path"].startswith("/p/") and e["headers"])
    result = summarise(personal, plain, args.warmup, renders)
    result.update(visitors=args.visitors, pages=args.pages, zipf=args.zipf)
    print(
        f"{result['requests']} page views over {args.pages} pages: "
        f"{result['hit_ratio']:.1%} cache hits once warm, "
        f"at most {result['variants_per_page_max']} copies of a page",
        file=sys.stderr,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
