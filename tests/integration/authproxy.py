"""What every pass-through auth-request proxy (deploy/caddy, deploy/haproxy) must do: personalise,
fail open, trust no client header — as checks, and as `ProxySuite`, the tests that run them, which
each proxy's test file subclasses with how to start its proxy (`starter`).

Besides the real edgeside, some checks put a *decider that misbehaves* behind a second instance of
the proxy: a real HTTP server on loopback (`decider_stub`) that records every callout's headers and
answers what the page's path asks for (`…/bad-key`, `…/404`, `…/slow`: a malformed key, a 404,
nothing for 5 s). It is the proxy under test, not edgeside, that these checks are about: what it
sends to a decider and what it makes of a strange answer. One stub and one proxy serve every such
check of a test module (each check its own page path), which keeps the process starts down.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from bench.procs import Edgeside, edgeside, free_port, process, wait_http
from bench.proxies import Running, _wait_listening

from .helpers import SAFE_HEADER, decide, demo_cookies, keys_by_cookie, page, raw_get, renders
from .helpers import variants as page_variants

# A proxy starter: (work dir, edgeside host:port, origin host:port) → the running proxy.
StartProxy = Callable[[Path, str, str], AbstractContextManager[Running]]


def starter(
    name: str, argv: list[str], env: Callable[[Path, int, str, str], dict[str, str]]
) -> StartProxy:
    """How a proxy is started: `argv` run in its work directory with `env(work, port, edgeside,
    origin)`, on a free port, until it listens."""

    @contextmanager
    def start(work: Path, upstream: str, origin: str) -> Iterator[Running]:
        work.mkdir(parents=True, exist_ok=True)
        port = free_port()
        log = work / f"{name}-{port}.log"
        with process(argv, log=log, env=env(work, port, upstream, origin), cwd=work) as proc:
            url = f"http://127.0.0.1:{port}"
            _wait_listening(url, proc, log)
            yield Running(url, port, proc, log)

    return start


@dataclass
class Stubbed:
    """A proxy whose decider is the stub, and the stub's record of callouts."""

    proxy: Running
    record: Path


EDGE_HEADERS = {"x-edge-key", "x-edge-decision", "x-edge-fallback"}
FALLBACK_SEEN = {"x-edge-key": "fallback", "x-edge-fallback": "edgeside-unavailable"}
# Sent along where edgeside gives no decision (or a partial one): the proxy has nothing of its own
# to overwrite these with there, so only deleting them keeps them from the origin.
FORGED = {
    "X-Edge-Key": "chosen-by-attacker",
    "X-Edge-Decision": "home_hero=free_money",
    "X-Edge-Fallback": "none",
    "X-Edge-Segments": "vip",
}

# The stub decider: its answer is chosen by the last segment of the page path the proxy forwards in
# X-Original-URI (anything unknown: a well-formed 204). It appends every request's headers to a
# JSON-lines file so a test can prove what the proxy sent.
_STUB = r"""
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
port, record = int(sys.argv[1]), sys.argv[2]
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_GET(self):
        if self.path == "/__stub/health":
            self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
            return
        entry = {"path": self.path, "headers": [[k, v] for k, v in self.headers.items()]}
        with open(record, "a") as f:
            f.write(json.dumps(entry) + "\n")
        page = self.headers.get("X-Original-URI", "")
        mode = page.split("?")[0].rsplit("/", 1)[-1]
        if mode == "slow":
            time.sleep(5)
        if mode == "bad-key":
            self.send_response(204)
            self.send_header("X-Edge-Key", "not a key!")
            self.send_header("X-Edge-Decision", "home_hero=free_money")
            self.end_headers()
            return
        if mode == "bad-decision":
            self.send_response(204)
            self.send_header("X-Edge-Key", "stubkey1")
            self.send_header("X-Edge-Decision", "home_hero=<script>")
            self.send_header("X-Edge-Fallback", "a b")
            self.end_headers()
            return
        status = {"404": 404, "500": 500, "403": 403}.get(mode, 204)
        body = b"not a decision" if status != 204 else b""
        self.send_response(status)
        self.send_header("X-Edge-Key", "from-an-error-page" if status != 204 else "stubkey0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"""


@contextmanager
def decider_stub(work: Path) -> Iterator[tuple[str, Path]]:
    """A misbehaving decider on loopback: yields its host:port and the file of recorded callouts."""
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    record = work / f"callouts-{port}.jsonl"
    record.touch()
    log = work / f"stub-{port}.log"
    argv = [sys.executable, "-c", _STUB, str(port), str(record)]
    with process(argv, log=log, cwd=work) as proc:
        wait_http(f"http://127.0.0.1:{port}/__stub/health", proc=proc, log=log, timeout=15)
        yield f"127.0.0.1:{port}", record


@contextmanager
def stubbed(start: StartProxy, work: Path, origin: Running) -> Iterator[Stubbed]:
    """The proxy under test with the stub as its decider."""
    with (
        decider_stub(work / "stub") as (stub, record),
        start(work / "stubbed-proxy", stub, f"127.0.0.1:{origin.port}") as proxy,
    ):
        yield Stubbed(proxy, record)


def callouts(record: Path, page_path: str) -> list[dict[str, Any]]:
    """The recorded callouts for one page (the proxy's readiness probe makes others): path and
    headers (names lower-cased, repeated names kept)."""
    out = []
    for line in record.read_text().splitlines():
        entry = json.loads(line)
        headers: dict[str, list[str]] = {}
        for name, value in entry["headers"]:
            headers.setdefault(name.lower(), []).append(value)
        if headers.get("x-original-uri") == [page_path]:
            out.append({"path": entry["path"], "headers": headers})
    return out


def _decision(header: str) -> dict[str, str]:
    return dict(p.split("=", 1) for p in header.split(";") if p)


# -- personalised --------------------------------------------------------------------------------


def check_personalised(proxy: Running, decider: Edgeside, origin: Running, prefix: str) -> None:
    """Visitors in different segments get different pages: each rendered by the origin from the
    decision edgeside gives that visitor (the same one a direct callout gets), each marked with
    its key; an anonymous visitor gets the context-only decision."""
    path = f"{prefix}/personal"
    groups = keys_by_cookie(decider.url, path, demo_cookies()[:60])
    assert len(groups) >= 2, groups
    visitors = [members[0] for members in list(groups.values())[:3]]
    for cookie in [*visitors, None]:
        expected = decide(decider.url, path, cookie)
        response = page(proxy.url, path, cookie)
        assert response.status_code == 200, response.text
        assert response.headers["x-edge-key"] == expected["x-edge-key"]
        assert page_variants(response) == _decision(expected["x-edge-decision"])
        seen = renders(origin.url, path)[-1]["headers"]
        assert seen["x-edge-key"] == expected["x-edge-key"]
        assert seen["x-edge-decision"] == expected["x-edge-decision"]
        assert "x-edge-fallback" not in seen
    keys = {renders(origin.url, path)[i]["headers"]["x-edge-key"] for i in range(len(visitors))}
    assert len(keys) == len(visitors), "different segments must reach the origin as different keys"


def check_pages_for_other_sites_and_placements(
    proxy: Running, decider: Edgeside, origin: Running, prefix: str
) -> None:
    """The proxy picks the site from the Host header and the placements from the URL, as
    deploy/nginx does: an article page asks for the sidebar too, a shop-uk host gets shop-uk."""
    path = "/articles/" + prefix.strip("/") + "-run"
    expected = decide(decider.url, path, "c-alice", placements="article_sidebar,home_hero")
    response = page(proxy.url, path, "c-alice")
    assert response.status_code == 200
    assert page_variants(response) == _decision(expected["x-edge-decision"])
    assert set(page_variants(response)) == {"article_sidebar", "home_hero"}
    uk = decide(decider.url, f"{prefix}/uk", "c-alice", site="shop-uk")
    fr = decide(decider.url, f"{prefix}/uk", "c-alice", site="shop-fr")
    assert uk["x-edge-key"] != fr["x-edge-key"], "the demo should decide differently per site"
    got = page(proxy.url, f"{prefix}/uk", "c-alice", Host="shop-uk.example")
    assert got.headers["x-edge-key"] == uk["x-edge-key"]


# -- trust ---------------------------------------------------------------------------------------


def check_client_cannot_choose_its_decision(
    proxy: Running, decider: Edgeside, origin: Running, prefix: str
) -> None:
    """Decision headers, a visitor id, a site and placements sent by the client change nothing:
    the origin gets the anonymous visitor's decision, never the forged one."""
    path = f"{prefix}/forged"
    anonymous = decide(decider.url, path, None)
    chloe = decide(decider.url, path, "c-chloe", site="shop-uk", placements="home_hero")
    assert chloe["x-edge-key"] != anonymous["x-edge-key"]
    forged = page(
        proxy.url,
        path,
        **{
            "X-Edge-Key": "chosen-by-attacker",
            "X-Edge-Decision": "home_hero=free_money",
            "X-Edge-Fallback": "none",
            "X-Visitor-Id": "cookie:c-chloe",
            "X-Site": "shop-uk",
            "X-Placements": "home_hero,cart_upsell",
        },
    )
    assert forged.status_code == 200
    assert forged.headers["x-edge-key"] == anonymous["x-edge-key"]
    seen = renders(origin.url, path)[-1]["headers"]
    assert seen == {
        "x-edge-key": anonymous["x-edge-key"],
        "x-edge-decision": anonymous["x-edge-decision"],
    }


def check_callout_sends_only_trusted_inputs(stub: Stubbed) -> None:
    """What the decider receives: our URI, site and placements, only the edgeside cookie, the
    context headers; never the client's X-Visitor-Id, X-Edge-*, Authorization or session cookies."""
    response = page(
        stub.proxy.url,
        "/trust/callout?q=1",
        None,
        Cookie="session=secret-session; edgeside_id=c-alice; cart=42",
        **{
            "X-Visitor-Id": "cookie:c-chloe",
            "X-Site": "shop-uk",
            "X-Placements": "cart_upsell",
            "X-Original-URI": "/elsewhere",
            "X-Edge-Key": "forged",
            "Authorization": "Bearer stolen",
            "X-Consent": "0",
            "Accept-Language": "fr-FR",
            "CF-IPCountry": "FR",
        },
    )
    assert response.status_code == 200
    (call,) = callouts(stub.record, "/trust/callout?q=1")
    sent = call["headers"]
    assert call["path"].split("?")[0] == "/v1/edge"
    assert sent["x-original-uri"] == ["/trust/callout?q=1"]
    assert sent["x-site"] == ["shop-fr"]
    assert sent["x-placements"] == ["home_hero"]
    assert sent["cookie"] == ["edgeside_id=c-alice"]
    for name in ("x-visitor-id", "x-edge-key", "authorization"):
        assert name not in sent, (name, sent)
    # Context a proxy forwards as nginx does (consent, language, CDN geo).
    assert sent["x-consent"] == ["0"]
    assert sent["accept-language"] == ["fr-FR"]
    assert sent["cf-ipcountry"] == ["FR"]


INJECTIONS = {
    "bare-cr": [b"Cookie: edgeside_id=c-alice\rX-Edge-Key: injected"],
    "encoded-crlf": [b"Cookie: edgeside_id=c-alice%0d%0aX-Edge-Key:%20injected"],
    "non-ascii": [b"Cookie: edgeside_id=caf\xc3\xa9-\xff\xfe"],
    "huge-id": [b"Cookie: edgeside_id=" + b"A" * 6000],
    "nul": [b"Cookie: edgeside_id=c-alice", b"X-Edge-Fallback: none\x00\r"],
    "nel": [b"Cookie: edgeside_id=c-bruno", b"X-Consent: 1\x85", b"CF-IPCountry: FR\xe2\x80\xa8X"],
    "emoji": [b"Cookie: edgeside_id=c-chloe", b"User-Agent: \xf0\x9f\x92\xa3;X-Edge-Key=evil"],
    "forged-lower": [b"x-edge-key: injected", b"x-edge-decision: home_hero=injected"],
    "forged-twice": [b"X-Edge-Key: injected", b"X-Edge-Key: injected2", b"X-Visitor-Id: x"],
}


def check_injection(
    proxy: Running, decider: Edgeside, origin: Running, prefix: str, case: str
) -> int:
    """Raw header bytes through the proxy: refused (400) or served, and whatever reaches the
    origin is only our decision headers, in the safe character set, with a key edgeside gives.
    Returns the status, for the caller to pin down what its proxy does."""
    path = f"{prefix}/inject-{case}"
    status = raw_get(proxy.port, path, INJECTIONS[case])
    assert status in (200, 400), status
    assert len(renders(origin.url, path)) == (1 if status == 200 else 0)
    known = {decide(decider.url, path, c)["x-edge-key"] for c in (None, "c-alice", "c-bruno")}
    known |= {decide(decider.url, path, "c-chloe")["x-edge-key"], "fallback"}
    for entry in renders(origin.url, path):
        for name, value in entry["headers"].items():
            assert SAFE_HEADER.fullmatch(value), (name, value)
            assert "injected" not in value and "evil" not in value
        assert entry["headers"]["x-edge-key"] in known
        assert set(entry["headers"]) <= EDGE_HEADERS
    return status


def check_answer_rechecked(stub: Stubbed, origin: Running) -> None:
    """A decider answering a malformed key gets the fallback page; a well-formed key with a
    malformed decision keeps the key and drops the decision. Nothing odd reaches the origin."""
    response = page(stub.proxy.url, "/recheck/bad-key", "c-alice", **FORGED)
    assert response.status_code == 200
    assert response.headers["x-edge-key"] == "fallback"
    assert renders(origin.url, "/recheck/bad-key")[-1]["headers"] == FALLBACK_SEEN
    response = page(stub.proxy.url, "/recheck/bad-decision", "c-alice", **FORGED)
    assert response.status_code == 200
    assert response.headers["x-edge-key"] == "stubkey1"
    assert renders(origin.url, "/recheck/bad-decision")[-1]["headers"] == {"x-edge-key": "stubkey1"}


# -- fail-open -----------------------------------------------------------------------------------


def check_edgeside_stopped(proxy: Running, decider: Edgeside, origin: Running) -> None:
    """edgeside personalises, then stops: every page is still a 200, rendered with the fallback."""
    path = "/down/page"
    personal = page(proxy.url, path, "c-alice")
    assert personal.status_code == 200 and personal.headers["x-edge-key"] != "fallback"
    decider.proc.terminate()
    decider.proc.wait(timeout=10)
    for cookie in ("c-bruno", "someone-new", None):
        response = page(proxy.url, path, cookie, **FORGED)
        assert response.status_code == 200, response.text
        assert response.headers["x-edge-key"] == "fallback"
        assert 'data-fallback="edgeside-unavailable"' in response.text
    fallback = [e for e in renders(origin.url, path) if e["headers"]["x-edge-key"] == "fallback"]
    assert [e["headers"] for e in fallback] == [FALLBACK_SEEN] * 3


def check_decider_misbehaving(
    stub: Stubbed, origin: Running, mode: str, budget_s: float = 3.0
) -> None:
    """A decider answering 404/500/403, or nothing at all: the page, with the fallback, in time."""
    path = f"/misbehaving/{mode}"
    started = time.monotonic()
    response = page(stub.proxy.url, path, "c-alice", **FORGED)
    elapsed = time.monotonic() - started
    assert len(callouts(stub.record, path)) == 1, "the proxy must ask the decider"
    assert response.status_code == 200, response.text
    assert response.headers["x-edge-key"] == "fallback"
    assert "not a decision" not in response.text
    assert renders(origin.url, path)[-1]["headers"] == FALLBACK_SEEN
    assert elapsed < budget_s, elapsed


# -- the tests, for a proxy's test file to subclass ----------------------------------------------


class ProxySuite:
    """Every check above against one proxy. A test file subclasses it as `Test<Proxy>`, sets
    `name` (its page paths start with /name) and `refused` (the injection cases its proxy answers
    with 400), and gives a `start_proxy` fixture (a `starter`). One proxy in front of the real
    edgeside and one in front of the stub serve the whole class."""

    name: ClassVar[str]
    refused: ClassVar[frozenset[str]]

    @pytest.fixture(scope="class")
    @classmethod
    def proxy(
        cls, start_proxy: StartProxy, work: Path, decider: Edgeside, origin: Running
    ) -> Iterator[Running]:
        edge = decider.url.removeprefix("http://")
        with start_proxy(work / cls.name, edge, f"127.0.0.1:{origin.port}") as running:
            yield running

    @pytest.fixture(scope="class")
    @classmethod
    def stub(cls, start_proxy: StartProxy, work: Path, origin: Running) -> Iterator[Stubbed]:
        with stubbed(start_proxy, work / f"{cls.name}-stub", origin) as running:
            yield running

    def test_known_visitors_get_their_personalised_page(
        self, proxy: Running, decider: Edgeside, origin: Running
    ) -> None:
        check_personalised(proxy, decider, origin, f"/{self.name}")

    def test_site_from_host_and_placements_from_url(
        self, proxy: Running, decider: Edgeside, origin: Running
    ) -> None:
        check_pages_for_other_sites_and_placements(proxy, decider, origin, f"/{self.name}")

    def test_client_cannot_choose_its_decision_or_borrow_a_visitor(
        self, proxy: Running, decider: Edgeside, origin: Running
    ) -> None:
        check_client_cannot_choose_its_decision(proxy, decider, origin, f"/{self.name}")

    def test_callout_carries_only_trusted_inputs(self, stub: Stubbed) -> None:
        check_callout_sends_only_trusted_inputs(stub)

    @pytest.mark.parametrize("case", sorted(INJECTIONS))
    def test_injection_attempts_never_reach_the_origin(
        self, proxy: Running, decider: Edgeside, origin: Running, case: str
    ) -> None:
        status = check_injection(proxy, decider, origin, f"/{self.name}", case)
        assert status == (400 if case in self.refused else 200)

    def test_malformed_answers_are_not_trusted(self, stub: Stubbed, origin: Running) -> None:
        check_answer_rechecked(stub, origin)

    def test_edgeside_stopped_pages_still_served_with_the_fallback(
        self, start_proxy: StartProxy, cdn_data: Path, tmp_path: Path, origin: Running
    ) -> None:
        with (
            edgeside(cdn_data, log_dir=tmp_path) as own,
            start_proxy(
                tmp_path, own.url.removeprefix("http://"), f"127.0.0.1:{origin.port}"
            ) as proxy,
        ):
            check_edgeside_stopped(proxy, own, origin)

    @pytest.mark.parametrize("mode", ["404", "500", "403", "slow"])
    def test_decider_misbehaving_still_serves_the_page(
        self, stub: Stubbed, origin: Running, mode: str
    ) -> None:
        check_decider_misbehaving(stub, origin, mode)
