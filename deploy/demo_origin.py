"""A demo origin for the CDN pattern: renders a page from the decision headers the proxy sends.

Not part of the product. It stands in for a CMS or shop front-end so the whole chain
(proxy → edgeside → proxy cache → origin) can be watched and tested:

- `GET /<anything>`: an HTML page that shows the variant chosen for each placement (from
  `X-Edge-Decision`), the decision key, the fallback reason, a render counter and a timestamp.
  A cached copy keeps its counter, so a client can tell a cache hit from a fresh render.
- `GET /esi/<anything>`: a page whose body is shared by everybody and whose personal part is an
  `<esi:include>` of edgeside's fragment route (for Varnish); one include is of a placement that
  does not exist, to prove that a failing fragment does not break the page.
- `GET /__origin/log`: JSON list of the requests rendered so far (path and every `X-Edge-*` header
  exactly as received), for tests that must prove what reached the origin.
- `GET /__origin/health`: 200.

Only the standard library, so it starts in a few milliseconds anywhere. Run:
`python deploy/demo_origin.py --port 8000`.
"""

from __future__ import annotations

import argparse
import html
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The shared page is cached by the proxy for this long: long enough to show hits, short enough
# for a demo to pick up changes.
PAGE_MAX_AGE_S = 300


class _Counter:
    """Render counter shared by the handler threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0
        self.log: list[dict[str, object]] = []

    def next(self, path: str, edge_headers: dict[str, str]) -> int:
        with self._lock:
            self._value += 1
            # Bounded: a long demo or benchmark must not grow memory without limit.
            if len(self.log) < 100_000:
                self.log.append({"n": self._value, "path": path, "headers": edge_headers})
            return self._value


COUNTER = _Counter()


def parse_decision(value: str) -> list[tuple[str, str]]:
    """`home_hero=gold_banner;home_recs=default` → [(placement, variant), …]; junk is skipped."""
    pairs = []
    for part in value.split(";"):
        placement, sep, variant = part.partition("=")
        if sep and placement:
            pairs.append((placement, variant))
    return pairs


# The per-visitor recommendations, as a hole in the shared page that the proxy fills per request.
RECS_INCLUDE = {
    "ssi": '<!--# include virtual="/_edgeside/fragments/home_recs" -->',
    "esi": '<esi:include src="/v1/fragments/home_recs" onerror="continue"/>',
}


def render_page(
    path: str, decision: str, key: str, fallback: str, n: int, includes: str = ""
) -> str:
    rows = "".join(
        f'<li data-placement="{html.escape(p)}">{html.escape(p)}: '
        f'<b class="variant">{html.escape(v)}</b></li>'
        for p, v in parse_decision(decision)
    )
    return (
        "<!doctype html><html><head><title>demo shop</title></head><body>"
        f"<h1>demo shop {html.escape(path)}</h1>"
        f"<ul id=placements>{rows or '<li>no decision: default page</li>'}</ul>"
        f'<p id=key data-key="{html.escape(key)}">decision key: {html.escape(key or "-")}</p>'
        f'<p id=fallback data-fallback="{html.escape(fallback)}">fallback: '
        f"{html.escape(fallback or '-')}</p>"
        f"<div id=recs>{RECS_INCLUDE.get(includes, '')}</div>"
        f'<p id=render data-render="{n}">render #{n} at {time.time():.6f}</p>'
        "<footer>end of page</footer></body></html>"
    )


def render_esi_page(path: str, site: str, n: int) -> str:
    # The body is the same for everybody; only the included fragment is personal.
    # onerror="continue" lets an ESI processor that honours it (Varnish with the feature flag
    # esi_include_onerror) drop a broken fragment; our VCL also turns fragment errors into an
    # empty body, so either way the page renders.
    return (
        "<!doctype html><html><head><title>demo shop</title></head><body>"
        f"<h1>shared page {html.escape(path)}</h1>"
        f'<esi:include src="/v1/fragments/home_hero?site={html.escape(site)}" onerror="continue"/>'
        '<esi:include src="/v1/fragments/no..such..placement" onerror="continue"/>'
        f'<p id=render data-render="{n}">render #{n} at {time.time():.6f}</p>'
        "<footer>end of page</footer></body></html>"
    )


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive with the proxy; every answer has Content-Length
    server_version = "demo-origin"

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the proxy logs requests; tests read /__origin/log

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = self.path
        if path == "/__origin/health":
            self._send(200, b"ok", "text/plain", {"Cache-Control": "no-store"})
            return
        if path == "/__origin/log":
            body = json.dumps(COUNTER.log).encode()
            self._send(200, body, "application/json", {"Cache-Control": "no-store"})
            return
        # Every X-Edge-* header as received (latin-1 round trip keeps the raw bytes visible).
        edge = {k.lower(): v for k, v in self.headers.items() if k.lower().startswith("x-edge-")}
        n = COUNTER.next(path, edge)
        if path.startswith("/esi/"):
            site = self.headers.get("X-Site", "shop-fr")
            body = render_esi_page(path, site, n).encode()
            extra = {
                "Cache-Control": f"public, max-age={PAGE_MAX_AGE_S}",
                # Asks the surrogate (Varnish) to process ESI; it removes the header.
                "Surrogate-Control": 'content="ESI/1.0"',
            }
        else:
            body = render_page(
                path,
                edge.get("x-edge-decision", ""),
                edge.get("x-edge-key", ""),
                edge.get("x-edge-fallback", ""),
                n,
                edge.get("x-edge-includes", ""),
            ).encode()
            extra = {"Cache-Control": f"public, max-age={PAGE_MAX_AGE_S}"}
            if edge.get("x-edge-includes") == "esi":
                extra["Surrogate-Control"] = 'content="ESI/1.0"'
        extra["X-Origin-Render"] = str(n)
        self._send(200, body, "text/html; charset=utf-8", extra)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default 5 drops connections under a benchmark's burst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    httpd = _Server((args.host, args.port), Handler)
    print(f"demo origin on http://{args.host}:{args.port}", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
