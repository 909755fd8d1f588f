"""What the CDN tests ask of the chain: pages through a proxy, decisions straight from edgeside,
and what the origin saw."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import httpx

from server.offline.demo import DEMO_DIR
from tests.conftest import fresh_client

REPO = Path(__file__).resolve().parents[2]
HOME_PLACEMENTS = "home_hero"  # what the proxies ask for on /shared/…, /p/…: see deploy/
# What the server itself lets into a decision header (server/asgi.py) and what the proxies accept.
SAFE_HEADER = re.compile(r"[A-Za-z0-9_.:;=,/+-]*")


# One client for every request (tests/conftest.py: fresh_client says what it keeps the same).
HTTP = fresh_client()


def demo_cookies() -> list[str]:
    """Every `cookie` identifier in the demo profile exports, in file order, deduplicated."""
    seen: dict[str, None] = {}
    for path in sorted((DEMO_DIR / "profiles").glob("*.ndjson")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                cookie = json.loads(line).get("ids", {}).get("cookie")
                if isinstance(cookie, str):
                    seen.setdefault(cookie, None)
    return list(seen)


def decide(
    edgeside_url: str,
    path: str,
    cookie: str | None,
    placements: str = HOME_PLACEMENTS,
    site: str = "shop-fr",
    **headers: str,
) -> httpx.Headers:
    """Ask edgeside exactly what the nginx callout asks for this page and visitor."""
    sent = {"X-Original-URI": path, "X-Placements": placements, "X-Site": site, **headers}
    if cookie is not None:
        sent["Cookie"] = f"edgeside_id={cookie}"
    response = HTTP.get(edgeside_url + "/v1/edge", headers=sent, timeout=5)
    assert response.status_code == 204, response.text
    return response.headers


def keys_by_cookie(edgeside_url: str, path: str, cookies: list[str]) -> dict[str, list[str]]:
    """Decision key → the cookies that get it, for this page."""
    groups: dict[str, list[str]] = {}
    with httpx.Client(base_url=edgeside_url, timeout=5) as client:
        for cookie in cookies:
            response = client.get(
                "/v1/edge",
                headers={
                    "X-Original-URI": path,
                    "X-Placements": HOME_PLACEMENTS,
                    "X-Site": "shop-fr",
                    "Cookie": f"edgeside_id={cookie}",
                },
            )
            assert response.status_code == 204
            groups.setdefault(response.headers["x-edge-key"], []).append(cookie)
    return groups


def page(base: str, path: str, cookie: str | None = None, **headers: str) -> httpx.Response:
    if cookie is not None:
        headers["Cookie"] = f"edgeside_id={cookie}"
    response = HTTP.get(base + path, headers=headers, timeout=10)
    return response


def origin_log(origin_url: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = HTTP.get(origin_url + "/__origin/log", timeout=5).json()
    return entries


def renders(origin_url: str, path: str) -> list[dict[str, Any]]:
    """The origin renders of `path` so far (each a fresh page, i.e. a proxy cache miss)."""
    return [e for e in origin_log(origin_url) if e["path"] == path]


def render_number(response: httpx.Response) -> int:
    found = re.search(r'data-render="(\d+)"', response.text)
    assert found, response.text
    return int(found.group(1))


_VARIANT = re.compile(r'data-placement="([^"]+)">[^:]+: <b class="variant">([^<]*)</b>')


def variants(response: httpx.Response) -> dict[str, str]:
    """Placement → variant, as the origin rendered them into the page."""
    return dict(_VARIANT.findall(response.text))


def raw_get(port: int, path: str, header_lines: list[bytes]) -> int:
    """Send a request with raw header bytes (httpx refuses CR/LF, non-ASCII); return the status."""
    request = b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    request += b"".join(line + b"\r\n" for line in header_lines)
    request += b"Connection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    head = b"".join(chunks).split(b"\r\n", 1)[0]
    match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    assert match, head
    return int(match.group(1))


def fragment(edgeside_url: str, path: str, cookie: str, placement: str = "home_recs") -> str:
    """The fragment edgeside gives this visitor on this page, as the proxies ask for it."""
    response = HTTP.get(
        f"{edgeside_url}/v1/fragments/{placement}",
        headers={"X-Original-URI": path, "X-Site": "shop-fr", "Cookie": f"edgeside_id={cookie}"},
        timeout=5,
    )
    assert response.status_code == 200, response.text
    return response.text


_RECS = re.compile(r"<div id=recs>(.*?)</div><p id=render", re.S)


def recs(response: httpx.Response) -> str:
    """What the proxy filled into the page's recommendations hole."""
    found = _RECS.search(response.text)
    assert found, response.text
    return found.group(1)


def same_key_different_recs(edgeside_url: str, path: str, cookies: list[str]) -> list[str]:
    """Two visitors with one page key but different personal recommendations."""
    for members in keys_by_cookie(edgeside_url, path, cookies).values():
        by_recs: dict[str, str] = {}
        for cookie in members:
            by_recs.setdefault(fragment(edgeside_url, path, cookie), cookie)
            if len(by_recs) == 2:
                return list(by_recs.values())
    raise AssertionError("no two demo visitors share a page key with different recommendations")


# Pages of the demo shop a Zipf load visits: each matches a `pages:` entry of demo/rules.yaml.
ZIPF_PAGES = ["/", "/articles/trail-running", "/cart", "/shop/tents"]


def zipf_load(
    base: str, requests: int, seed: int = 16, s: float = 1.1
) -> list[tuple[str, str, httpx.Response]]:
    """`requests` page views through a proxy, sequentially: visitors drawn Zipf(s) over the demo
    visitors (by cookie), pages Zipf(s) over `ZIPF_PAGES`. (path, cookie, response) each."""
    import random

    rng = random.Random(seed)
    cookies = demo_cookies()
    visitor_w = [1.0 / (rank + 1) ** s for rank in range(len(cookies))]
    page_w = [1.0 / (rank + 1) ** s for rank in range(len(ZIPF_PAGES))]
    out = []
    with httpx.Client(base_url=base, timeout=10) as client:
        for _ in range(requests):
            path = rng.choices(ZIPF_PAGES, page_w)[0]
            cookie = rng.choices(cookies, visitor_w)[0]
            response = client.get(path, headers={"Cookie": f"edgeside_id={cookie}"})
            out.append((path, cookie, response))
    return out


def cache_hits(responses: list[httpx.Response]) -> float:
    """The share the proxy served from its cache, by its own cache status header."""
    hits = sum(r.headers.get("x-cache-status") == "HIT" for r in responses)
    return hits / len(responses) if responses else 0.0


def decide_by_uri(
    edgeside_url: str, path: str, cookie: str, site: str | None = None
) -> httpx.Headers:
    """What edgeside answers a bare `auth_request`: only the URI and the cookie (and the site a
    proxy maps the Host to, if it does), no placements."""
    sent = {"X-Original-URI": path, "Cookie": f"edgeside_id={cookie}"}
    if site is not None:
        sent["X-Site"] = site
    response = HTTP.get(edgeside_url + "/v1/edge", headers=sent, timeout=5)
    assert response.status_code == 204, response.text
    return response.headers


def assert_personalised_from_cache(
    edgeside_url: str, load: list[tuple[str, str, httpx.Response]], site: str | None = None
) -> None:
    """The proof the issue asks of a generic proxy config: every page served, each carrying the
    decision edgeside gives that visitor for that URI (asked with the URI alone), several different
    decisions per page (personalised), and ≥ 95 % of the views after a 20 % warm-up served from
    the proxy's cache."""
    assert all(r.status_code == 200 for _, _, r in load)
    for path, cookie, response in load[:: max(1, len(load) // 25)]:
        expected = decide_by_uri(edgeside_url, path, cookie, site)
        assert response.headers["x-edge-key"] == expected["x-edge-key"], (path, cookie)
        assert expected["x-edge-key"] not in ("none", "fallback")
    home = {variants(r).get("home_hero") for p, _, r in load if p == "/"}
    assert len(home) >= 2, home  # known visitors get different heroes
    cut = len(load) // 5
    hits = cache_hits([r for _, _, r in load[cut:]])
    assert hits >= 0.95, f"cache hits {hits:.3f} after the warm-up"
