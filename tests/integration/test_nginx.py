"""nginx → edgeside → origin, all real: personalised pages that stay cached (issue 6).

Each test uses its own URL paths, so the module's shared cache never links two tests.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.procs import Edgeside, edgeside, free_port, process, wait_http
from bench.proxies import (
    NGINX_GENERIC_TEMPLATE,
    NGINX_TEMPLATE,
    Running,
    nginx,
    nginx_config_check,
    render_nginx,
)

from .helpers import (
    SAFE_HEADER,
    assert_personalised_from_cache,
    decide,
    demo_cookies,
    fragment,
    keys_by_cookie,
    page,
    raw_get,
    recs,
    render_number,
    renders,
    same_key_different_recs,
    variants,
    zipf_load,
)

pytestmark = pytest.mark.integration


def test_rendered_config_passes_nginx_t(nginx_bin: str, tmp_path: Path) -> None:
    config = render_nginx(listen="127.0.0.1:1", edgeside="127.0.0.1:2", origin="127.0.0.1:3")
    result = nginx_config_check(nginx_bin, config, tmp_path)
    assert result.returncode == 0, result.stderr


def test_same_segment_visitors_share_one_cached_copy(
    proxy: Running, decider: Edgeside, origin: Running
) -> None:
    path = "/shared/segment"
    groups = keys_by_cookie(decider.url, path, demo_cookies()[:120])
    key, members = max(groups.items(), key=lambda kv: len(kv[1]))
    assert len(members) >= 3, groups
    first = page(proxy.url, path, members[0])
    assert first.status_code == 200
    assert first.headers["x-cache-status"] == "MISS"
    assert first.headers["x-edge-key"] == key
    for cookie in members[1:3]:
        again = page(proxy.url, path, cookie)
        assert again.headers["x-cache-status"] == "HIT"
        assert again.headers["x-edge-key"] == key
        # The same copy (its render number); only the per-request SSI recommendations differ.
        assert render_number(again) == render_number(first)
    # Three visitors, one render at the origin.
    assert len(renders(origin.url, path)) == 1


def test_different_segments_get_different_pages_each_cached(
    proxy: Running, decider: Edgeside, origin: Running
) -> None:
    path = "/shared/segments"
    groups = keys_by_cookie(decider.url, path, demo_cookies()[:120])
    assert len(groups) >= 2, groups
    (key_a, (a, *_)), (key_b, (b, *_)) = list(groups.items())[:2]
    first_a, first_b = page(proxy.url, path, a), page(proxy.url, path, b)
    assert (first_a.headers["x-edge-key"], first_b.headers["x-edge-key"]) == (key_a, key_b)
    assert render_number(first_a) != render_number(first_b)
    # Each page shows its own decision, as the origin received it.
    for response, cookie in ((first_a, a), (first_b, b)):
        expected = decide(decider.url, path, cookie)["x-edge-decision"]
        assert variants(response) == dict(p.split("=") for p in expected.split(";"))
    # And the second request of each is a hit on its own copy.
    second_a, second_b = page(proxy.url, path, a), page(proxy.url, path, b)
    assert second_a.headers["x-cache-status"] == second_b.headers["x-cache-status"] == "HIT"
    assert render_number(second_a) == render_number(first_a)
    assert render_number(second_b) == render_number(first_b)
    assert len(renders(origin.url, path)) == 2


def test_personal_recommendations_fill_the_shared_page_per_request(
    proxy: Running, decider: Edgeside, origin: Running
) -> None:
    path = "/shared/recs"
    a, b = same_key_different_recs(decider.url, path, demo_cookies()[:150])
    first, second = page(proxy.url, path, a), page(proxy.url, path, b)
    assert second.headers["x-cache-status"] == "HIT"
    assert render_number(first) == render_number(second)
    assert recs(first) == fragment(decider.url, path, a)
    assert recs(second) == fragment(decider.url, path, b)
    assert recs(first) != recs(second)
    assert 'data-placement="home_recs"' in recs(first)
    assert len(renders(origin.url, path)) == 1


def test_anonymous_and_non_consenting_visitors_get_the_default_page(
    proxy: Running, decider: Edgeside, origin: Running
) -> None:
    path = "/shared/anonymous"
    default_key = decide(decider.url, path, None)["x-edge-key"]
    assert decide(decider.url, path, "c-alice")["x-edge-key"] != default_key
    responses = [
        page(proxy.url, path),
        page(proxy.url, path, "nobody-knows-me"),
        page(proxy.url, path, "c-alice", **{"X-Consent": "0"}),
        page(proxy.url, path, "c-chloe", **{"X-Consent": "0"}),
    ]
    assert {r.headers["x-edge-key"] for r in responses} == {default_key}
    assert {render_number(r) for r in responses} == {render_number(responses[0])}
    assert [r.headers["x-cache-status"] for r in responses] == ["MISS", "HIT", "HIT", "HIT"]
    personal = page(proxy.url, path, "c-alice")
    assert personal.headers["x-edge-key"] != default_key
    assert len(renders(origin.url, path)) == 2


def test_client_cannot_choose_its_decision_or_borrow_a_visitor(
    proxy: Running, decider: Edgeside, origin: Running
) -> None:
    path = "/shared/forged"
    default_key = decide(decider.url, path, None)["x-edge-key"]
    forged = page(
        proxy.url,
        path,
        **{
            "X-Edge-Key": "chosen-by-attacker",
            "X-Edge-Decision": "home_hero=free_money",
            "X-Visitor-Id": "cookie:c-chloe",
            "X-Site": "shop-uk",
            "X-Placements": "home_hero,cart_upsell",
        },
    )
    assert forged.status_code == 200
    assert forged.headers["x-edge-key"] == default_key
    seen = renders(origin.url, path)[-1]["headers"]
    assert seen["x-edge-key"] == default_key
    assert "free_money" not in seen.get("x-edge-decision", "")


@pytest.mark.parametrize(
    "header_lines",
    [
        [b"Cookie: edgeside_id=c-alice\rX-Edge-Key: injected"],
        [b"Cookie: edgeside_id=c-alice%0d%0aX-Edge-Key:%20injected"],
        [b"Cookie: edgeside_id=caf\xc3\xa9-\xff\xfe"],
        [b"Cookie: edgeside_id=" + b"A" * 6000],
        [b"Cookie: other=1; " + b"x" * 20000 + b"; edgeside_id=c-alice"],
        [b"Cookie: edgeside_id=c-alice", b"X-Edge-Fallback: none\x00\r"],
        [b"Cookie: edgeside_id=c-bruno", b"X-Consent: 1\x85", b"CF-IPCountry: FR\xe2\x80\xa8X"],
        [b"Cookie: edgeside_id=c-chloe", b"User-Agent: \xf0\x9f\x92\xa3;X-Edge-Key=evil"],
    ],
    ids=["bare-cr", "encoded-crlf", "non-ascii", "huge-id", "huge-cookie", "nul", "nel", "emoji"],
)
def test_injection_attempts_never_reach_the_decision_headers(
    proxy: Running,
    decider: Edgeside,
    origin: Running,
    header_lines: list[bytes],
    request: pytest.FixtureRequest,
) -> None:
    path = f"/shared/inject-{request.node.callspec.id}"
    status = raw_get(proxy.port, path, header_lines)
    # nginx refuses a malformed request line itself (bare CR, NUL, a cookie over its header
    # buffers: 400); everything else is served, and what reaches the origin is checked below.
    refused = request.node.callspec.id in {"bare-cr", "nul", "huge-cookie"}
    assert status == (400 if refused else 200)
    assert len(renders(origin.url, path)) == (0 if refused else 1)
    known_keys = {decide(decider.url, path, c)["x-edge-key"] for c in (None, "c-alice", "c-bruno")}
    known_keys |= {decide(decider.url, path, "c-chloe")["x-edge-key"], "fallback"}
    for entry in renders(origin.url, path):
        for name, value in entry["headers"].items():
            assert SAFE_HEADER.fullmatch(value), (name, value)
            assert "injected" not in value and "evil" not in value
        assert entry["headers"]["x-edge-key"] in known_keys
        assert set(entry["headers"]) <= {
            "x-edge-key",
            "x-edge-decision",
            "x-edge-fallback",
            "x-edge-includes",
        }


def _edge_callouts(decider: Edgeside) -> float:
    text = httpx.get(decider.url + "/metrics", timeout=5).text
    match = re.search(r'edgeside_responses_total\{route="edge",status="204"\} ([0-9.e+]+)', text)
    return float(match.group(1)) if match else 0.0


def test_one_visitors_decision_is_reused_for_a_moment(proxy: Running, decider: Edgeside) -> None:
    path = "/shared/callout-cache"
    before = _edge_callouts(decider)
    for _ in range(5):
        assert page(proxy.url, path, "c-bruno").status_code == 200
    assert _edge_callouts(decider) - before == 1
    # The harness renders a 1 s callout TTL; nginx counts validity in whole seconds, so an entry
    # lives 1 to 2 s.
    time.sleep(2.1)
    assert page(proxy.url, path, "c-bruno").status_code == 200
    assert _edge_callouts(decider) - before == 2


# -- failure: edgeside stopped, or answering something that is not a decision -------------------


@pytest.fixture()
def own_stack(
    nginx_bin: str, cdn_data: Path, tmp_path: Path, origin: Running
) -> Iterator[tuple[Running, Edgeside]]:
    with (
        edgeside(cdn_data, log_dir=tmp_path) as decider,
        nginx(
            nginx_bin,
            tmp_path,
            edgeside=decider.url.removeprefix("http://"),
            origin=f"127.0.0.1:{origin.port}",
        ) as (proxy, _),
    ):
        yield proxy, decider


def test_edgeside_stopped_pages_still_served_with_the_fallback(
    own_stack: tuple[Running, Edgeside], origin: Running
) -> None:
    proxy, decider = own_stack
    path = "/down/page"
    personal = page(proxy.url, path, "c-alice")
    assert personal.status_code == 200 and personal.headers["x-edge-key"] != "fallback"
    decider.proc.terminate()
    decider.proc.wait(timeout=10)
    for cookie in ("c-bruno", "someone-new", None):
        response = page(proxy.url, path, cookie)
        assert response.status_code == 200
        assert response.headers["x-edge-key"] == "fallback"
        assert 'data-fallback="edgeside-unavailable"' in response.text
    # Served from one fallback copy, rendered once by the origin with no decision at all.
    fallback = [e for e in renders(origin.url, path) if e["headers"]["x-edge-key"] == "fallback"]
    assert len(fallback) == 1
    assert fallback[0]["headers"] == {
        "x-edge-key": "fallback",
        "x-edge-fallback": "edgeside-unavailable",
        "x-edge-includes": "ssi",
    }
    # The SSI hole for the recommendations degrades to an empty fragment, not an error page.
    assert "edgeside fragment unavailable" in response.text


def test_callout_answering_non_2xx_still_serves_the_page(
    nginx_bin: str, tmp_path: Path, origin: Running
) -> None:
    # A real HTTP server that answers 404 to /v1/edge stands in for a misrouted or broken decider;
    # nginx's auth_request would turn that into a 500 for the page without the error_page mapping.
    port = free_port()
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    with process(argv, log=tmp_path / "http.log", cwd=empty) as proc:
        wait_http(f"http://127.0.0.1:{port}/", proc=proc, log=tmp_path / "http.log")
        with nginx(
            nginx_bin, tmp_path, edgeside=f"127.0.0.1:{port}", origin=f"127.0.0.1:{origin.port}"
        ) as (proxy, _):
            response = page(proxy.url, "/broken/decider", "c-alice")
    assert response.status_code == 200
    assert response.headers["x-edge-key"] == "fallback"


def test_slow_decider_times_out_into_the_fallback(
    nginx_bin: str, tmp_path: Path, origin: Running
) -> None:
    # A listener that accepts and never answers: the callout must give up (250 ms), not the page.
    port = free_port()
    code = (
        "import socket,time\n"
        f"s=socket.create_server(('127.0.0.1',{port}))\n"
        "conns=[]\n"
        "while True:\n    c,_=s.accept(); conns.append(c)\n"
    )
    with process([sys.executable, "-c", code], log=tmp_path / "slow.log") as proc:
        time.sleep(0.3)
        assert proc.poll() is None
        with nginx(
            nginx_bin, tmp_path, edgeside=f"127.0.0.1:{port}", origin=f"127.0.0.1:{origin.port}"
        ) as (proxy, _):
            started = time.monotonic()
            response = page(proxy.url, "/slow/decider", "c-alice")
            elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert response.headers["x-edge-key"] == "fallback"
    assert elapsed < 3


# -- the generic pattern: a bare auth_request, no placements, no site (issue 16) ---------------


@pytest.fixture(scope="module")
def generic(nginx_bin: str, work: Path, decider: Edgeside, origin: Running) -> Iterator[Running]:
    with nginx(
        nginx_bin,
        work / "generic",
        edgeside=decider.url.removeprefix("http://"),
        origin=f"127.0.0.1:{origin.port}",
        generic=True,
    ) as (running, _):
        yield running


def test_generic_config_names_no_placements_and_no_site() -> None:
    text = NGINX_GENERIC_TEMPLATE.read_text()
    assert "X-Placements" not in text and "X-Site" not in text and "?p=" not in text
    # Nor does the hardened one: which placements a page has lives in the rules (`pages:`).
    assert "X-Placements" not in NGINX_TEMPLATE.read_text().replace("X-Placements,", "")


def test_bare_auth_request_personalises_from_cache(generic: Running, decider: Edgeside) -> None:
    assert_personalised_from_cache(decider.url, zipf_load(generic.url, 400))


def test_bare_auth_request_fails_open(
    nginx_bin: str, cdn_data: Path, tmp_path: Path, origin: Running
) -> None:
    with (
        edgeside(cdn_data, log_dir=tmp_path) as decider,
        nginx(
            nginx_bin,
            tmp_path,
            edgeside=decider.url.removeprefix("http://"),
            origin=f"127.0.0.1:{origin.port}",
            generic=True,
        ) as (proxy, _),
    ):
        assert page(proxy.url, "/generic/down", "c-alice").headers["x-edge-key"] not in ("", "none")
        decider.proc.terminate()
        decider.proc.wait(timeout=10)
        for cookie in ("c-bruno", "someone-new", None):
            response = page(proxy.url, "/generic/down", cookie)
            assert response.status_code == 200
            assert response.headers.get("x-edge-key", "") == ""
            assert "demo shop /generic/down" in response.text
