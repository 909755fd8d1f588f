"""`GET /v1/edge` against a real uvicorn process: the callout nginx and Varnish make."""

from __future__ import annotations

import httpx

from bench.procs import Edgeside
from tests.server.conftest import ADMIN_TOKEN

PAGE = "/v1/edge?p=home_hero,home_recs&site=shop-fr"


def edge(client: httpx.Client, cookie: str | None = None, **headers: str) -> httpx.Response:
    if cookie is not None:
        headers["Cookie"] = f"edgeside_id={cookie}"
    # latin-1, as a proxy passes bytes through: non-ASCII must reach the server as it is.
    response = client.get(PAGE, headers={k: v.encode("latin-1") for k, v in headers.items()})
    assert response.status_code == 204, response.text
    assert response.content == b""
    return response


def test_answers_with_decision_headers(server: Edgeside) -> None:
    with server.client() as client:
        response = edge(client, "c-alice")
    h = response.headers
    assert len(h["x-edge-key"]) >= 8
    placements = dict(part.split("=") for part in h["x-edge-decision"].split(";"))
    assert set(placements) == {"home_hero", "home_recs"}
    assert "profiles=" in h["x-edge-snapshot"] and "rules=" in h["x-edge-snapshot"]
    assert "x-edge-fallback" not in h


def test_known_anonymous_and_non_consenting_visitors_get_different_pages(server: Edgeside) -> None:
    with server.client() as client:
        alice = edge(client, "c-alice").headers
        anonymous = edge(client, "not-a-known-cookie").headers
        no_cookie = edge(client).headers
        alice_no_consent = edge(client, "c-alice", **{"X-Consent": "0"}).headers
    assert alice["x-edge-key"] != anonymous["x-edge-key"]
    assert anonymous["x-edge-key"] == no_cookie["x-edge-key"]
    # Without consent no profile is read: the page is the anonymous one.
    assert alice_no_consent["x-edge-decision"] == anonymous["x-edge-decision"]
    assert alice["x-edge-segments"] != alice_no_consent["x-edge-segments"]


def test_same_visitor_same_key_every_time(server: Edgeside) -> None:
    with server.client() as client:
        keys = {edge(client, "c-bruno").headers["x-edge-key"] for _ in range(20)}
    assert len(keys) == 1


def test_visitor_id_header_and_cookie_resolve_to_the_same_person(server: Edgeside) -> None:
    with server.client() as client:
        by_cookie = edge(client, "c-chloe").headers["x-edge-key"]
        # Naming a visitor by header needs the `decide` scope (the admin token holds every scope).
        named = {"X-Visitor-Id": "cookie:c-chloe", "Authorization": f"Bearer {ADMIN_TOKEN}"}
        by_header = edge(client, **named).headers["x-edge-key"]
    assert by_cookie == by_header


def test_placements_from_header(server: Edgeside) -> None:
    with server.client() as client:
        response = client.get(
            "/v1/edge?site=shop-fr", headers={"X-Placements": "home_hero", "Cookie": "x=1"}
        )
    assert response.status_code == 204
    assert response.headers["x-edge-decision"].startswith("home_hero=")


def test_attacker_bytes_never_reach_decision_headers(server: Edgeside) -> None:
    hostile = {
        "Cookie": "edgeside_id=c-alice\u00e9%0d%0aSet-Cookie:%20x=1",
        "X-Visitor-Id": "cookie:\u00ff\u00fe",
        "X-Original-URI": "/%0d%0aX-Injected: 1",
        "Accept-Language": "x" * 4000,
    }
    with server.client() as client:
        response = client.get(PAGE, headers={k: v.encode("latin-1") for k, v in hostile.items()})
    assert response.status_code == 204
    for name, value in response.headers.items():
        if name.startswith("x-edge"):
            assert all(c.isalnum() or c in "_.:;=,/+-" for c in value), (name, value)
    assert "x-injected" not in response.headers
    assert "set-cookie" not in response.headers


def test_huge_or_garbage_cookie_is_an_anonymous_visitor(server: Edgeside) -> None:
    with server.client() as client:
        anonymous = edge(client).headers["x-edge-key"]
        garbage = edge(client, "%%\u00e9 ;;;==").headers["x-edge-key"]
        huge = edge(client, "a" * 6000).headers["x-edge-key"]
        # Control bytes never reach us: the HTTP parser refuses the request with a 4xx.
        control = client.get(PAGE, headers={"Cookie": "edgeside_id=\x01"})
    assert garbage == anonymous
    assert huge == anonymous
    assert 400 <= control.status_code < 500


def test_absurd_placement_list_is_a_400_with_a_json_error(server: Edgeside) -> None:
    names = ",".join(f"p{i}" for i in range(10_000))
    with server.client() as client:
        response = client.get("/v1/edge", headers={"X-Placements": names[:7000]})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_placements"


def test_wrong_method(server: Edgeside) -> None:
    with server.client() as client:
        response = client.post(PAGE)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_a_header_over_the_limit_is_a_431(server: Edgeside) -> None:
    with server.client() as client:
        response = client.get(PAGE, headers={"User-Agent": "x" * 9000})
        fragment = client.get("/v1/fragments/home_hero", headers={"Referer": "y" * 9000})
    assert response.status_code == 431
    assert response.json()["error"] == {
        "code": "header_too_large",
        "message": "a header is over 8192 bytes",
        "field": "user-agent",
    }
    assert fragment.status_code == 431


def counters(client: httpx.Client, name: str) -> dict[str, float]:
    """One metric's samples from /metrics, by their label text."""
    out: dict[str, float] = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) + 1 :].split("} ")
            out[labels] = float(value)
    return out


EDGE_HITS = 'memo="edge",result="hit"'
SHARED_HITS = 'memo="decision",result="hit"'


def test_a_repeated_question_is_answered_again_from_the_memo(server: Edgeside) -> None:
    with server.client() as client:
        first = edge(client, "c-bruno", **{"X-Original-URI": "/memo-test"}).headers
        memo = counters(client, "edgeside_memo_lookups_total")
        decisions = counters(client, "edgeside_decisions_total")
        again = [
            edge(client, "c-bruno", **{"X-Original-URI": "/memo-test"}).headers for _ in range(5)
        ]
        memo_after = counters(client, "edgeside_memo_lookups_total")
        decisions_after = counters(client, "edgeside_decisions_total")
    names = ("x-edge-key", "x-edge-decision", "x-edge-segments", "x-edge-snapshot")
    assert all([h[n] for n in names] == [first[n] for n in names] for h in again)
    assert memo_after[EDGE_HITS] - memo[EDGE_HITS] == 5
    # Every answer is counted, from the memo or not (at the scrape after it was sent).
    variant = dict(part.split("=") for part in first["x-edge-decision"].split(";"))["home_hero"]
    hero = f'placement="home_hero",variant="{variant}"'
    assert decisions_after[hero] - decisions[hero] >= 5


def test_strangers_on_a_page_get_the_answer_a_stranger_got(server: Edgeside) -> None:
    # The demo rules read the path only to find a page and never the device: each view of a
    # page is the same question for the rules, and strangers share its decision (the decision
    # memo keys by the context fields the rules read; issue 15 dropped the strangers' answer
    # memo, which cost more than it saved).
    browser = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) shared-test"
    place = {"CF-IPCity": "Sharedtown", "X-Original-URI": "/shared-page"}  # this test's own
    with server.client() as client:
        first = edge(client, "unknown-1", **place).headers
        memo = counters(client, "edgeside_memo_lookups_total")
        others = [
            edge(
                client,
                f"unknown-{i}",
                **place,
                **{"User-Agent": f"{browser} {i}"},
            ).headers
            for i in range(2, 6)
        ]
        memo_after = counters(client, "edgeside_memo_lookups_total")
    assert {h["x-edge-key"] for h in others} == {first["x-edge-key"]}
    assert memo_after[SHARED_HITS] - memo[SHARED_HITS] == 4
    # Each is a new visitor: their answers are not kept per request.
    assert memo_after[EDGE_HITS] == memo[EDGE_HITS]


def test_unknown_visitors_in_the_same_context_share_one_decision(server: Edgeside) -> None:
    # Consent said four ways is one context for the rules, but four questions to the memos that
    # key requests by their headers: each stranger's question is new, its decision is not.
    place = {"CF-IPCity": "Consentville"}
    with server.client() as client:
        first = edge(client, "unknown-a", **place).headers
        memo = counters(client, "edgeside_memo_lookups_total")
        others = [
            edge(client, f"unknown-{said}", **place, **{"X-Consent": said}).headers
            for said in ("1", "yes", "true", "granted")
        ]
        memo_after = counters(client, "edgeside_memo_lookups_total")
    assert {h["x-edge-key"] for h in others} == {first["x-edge-key"]}
    assert memo_after[SHARED_HITS] - memo[SHARED_HITS] == 4


def test_a_known_visitor_never_gets_the_strangers_answer(server: Edgeside) -> None:
    page = {"X-Original-URI": "/after-a-stranger"}
    with server.client() as client:
        stranger = edge(client, "never-seen-7", **page).headers["x-edge-key"]
        alice = edge(client, "c-alice", **page).headers["x-edge-key"]
        alice_elsewhere = edge(client, "c-alice").headers["x-edge-key"]
    assert alice == alice_elsewhere != stranger


def _page(client: httpx.Client, uri: bytes | None, cookie: str = "c-alice") -> httpx.Response:
    """A bare `auth_request` callout: no placements, no site, only the page's URI."""
    headers = {"Cookie": f"edgeside_id={cookie}"}
    if uri is not None:
        headers["X-Original-URI"] = uri.decode("latin-1")
    response = client.get("/v1/edge", headers={k: v.encode("latin-1") for k, v in headers.items()})
    assert response.status_code == 204, response.text
    return response


def test_the_page_names_the_placements(server: Edgeside) -> None:
    with server.client() as client:
        home = _page(client, b"/?utm_source=x").headers
        article = _page(client, b"/articles/trail-shoes").headers
        explicit = client.get(
            "/v1/edge?p=cart_upsell",
            headers={"X-Original-URI": "/", "Cookie": "edgeside_id=c-alice"},
        ).headers
    # (home_recs, one list per visitor, is on no page: an SSI/ESI fragment.)
    assert {p.split("=")[0] for p in home["x-edge-decision"].split(";")} == {"home_hero"}
    assert {p.split("=")[0] for p in article["x-edge-decision"].split(";")} == {
        "article_sidebar",
        "home_hero",
    }
    assert explicit["x-edge-decision"].startswith("cart_upsell=")  # explicit placements win


def test_no_page_is_an_empty_counted_answer_never_an_error(server: Edgeside) -> None:
    with server.client() as client:
        # (The demo's last page is `/*`: every path is a page there; `no_page` is
        # tests/rules/test_rules_pages.py's.)
        answers = [
            _page(client, None),
            _page(client, b"not-a-path"),
            _page(client, b"/" + b"a" * 3000),
            _page(client, b"/\xff\xfe"),
        ]
        metrics = client.get("/metrics").text
    for response in answers:
        assert response.headers["x-edge-key"] == "none"
        assert response.headers["x-edge-decision"] == ""
    for reason in ("no_uri", "bad_uri"):
        assert f'reason="{reason}"' in metrics, reason


def test_an_unknown_site_is_visible(server: Edgeside) -> None:
    with server.client() as client:
        typo = client.get("/v1/edge?p=home_hero&site=shop-frr")
        known = client.get("/v1/edge?p=home_hero&site=shop-fr")
        decided = client.post(
            "/v1/decide", json={"placements": ["home_hero"], "context": {"site": "shop-frr"}}
        ).json()
        metrics = client.get("/metrics").text
    assert typo.status_code == 204
    assert typo.headers["x-edge-fallback"] == "unknown_site"
    assert typo.headers["x-edge-decision"].startswith("home_hero=")  # still decided: default's
    assert "x-edge-fallback" not in known.headers
    assert decided["fallback"] == "unknown_site"
    assert 'reason="unknown_site"' in metrics
