"""Varnish 7 → edgeside → origin, all real: decide, restart, hash; and ESI fragments."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.procs import Edgeside, edgeside
from bench.proxies import VARNISH_TEMPLATE, Running, render_vcl, varnish

from .helpers import (
    assert_personalised_from_cache,
    decide,
    demo_cookies,
    fragment,
    keys_by_cookie,
    page,
    recs,
    render_number,
    renders,
    same_key_different_recs,
    variants,
    zipf_load,
)

pytestmark = pytest.mark.integration


def _addr(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


@pytest.fixture(scope="module")
def cache(varnishd_bin: str, work: Path, decider: Edgeside, origin: Running) -> Iterator[Running]:
    with varnish(
        varnishd_bin, work / "varnish", edgeside=_addr(decider.url), origin=_addr(origin.url)
    ) as running:
        yield running


def test_vcl_compiles(varnishd_bin: str, tmp_path: Path) -> None:
    vcl = tmp_path / "edgeside.vcl"
    vcl.write_text(render_vcl(edgeside=("127.0.0.1", 1), origin=("127.0.0.1", 2), default_site="x"))
    result = subprocess.run(
        [varnishd_bin, "-C", "-j", "none", "-f", str(vcl), "-n", str(tmp_path / "n")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_decide_restart_hash_one_copy_per_decision(
    cache: Running, decider: Edgeside, origin: Running
) -> None:
    path = "/v/segments"
    groups = keys_by_cookie(decider.url, path, demo_cookies()[:120])
    key, members = max(groups.items(), key=lambda kv: len(kv[1]))
    other_key, others = next((k, m) for k, m in groups.items() if k != key)
    assert len(members) >= 2, groups
    first = page(cache.url, path, members[0])
    second = page(cache.url, path, members[1])
    third = page(cache.url, path, others[0])
    assert first.status_code == second.status_code == third.status_code == 200
    assert (first.headers["x-edge-key"], second.headers["x-edge-key"]) == (key, key)
    assert third.headers["x-edge-key"] == other_key
    assert (first.headers["x-cache-status"], second.headers["x-cache-status"]) == ("MISS", "HIT")
    assert render_number(first) == render_number(second) != render_number(third)
    expected = decide(decider.url, path, members[0])["x-edge-decision"]
    assert variants(first) == dict(p.split("=") for p in expected.split(";"))
    assert len(renders(origin.url, path)) == 2


def test_recommendations_come_in_as_esi_on_the_keyed_page(
    cache: Running, decider: Edgeside, origin: Running
) -> None:
    path = "/v/recs"
    a, b = same_key_different_recs(decider.url, path, demo_cookies()[:150])
    first, second = page(cache.url, path, a), page(cache.url, path, b)
    assert second.headers["x-cache-status"] == "HIT"
    assert render_number(first) == render_number(second)
    assert (recs(first), recs(second)) == (
        fragment(decider.url, path, a),
        fragment(decider.url, path, b),
    )
    assert recs(first) != recs(second)
    assert len(renders(origin.url, path)) == 1


def test_client_decision_headers_are_ignored(cache: Running, decider: Edgeside) -> None:
    path = "/v/forged"
    default_key = decide(decider.url, path, None)["x-edge-key"]
    forged = page(cache.url, path, **{"X-Edge-Key": "mine", "X-Visitor-Id": "cookie:c-alice"})
    assert forged.headers["x-edge-key"] == default_key


def test_esi_fragment_is_personal_while_the_page_stays_shared(
    cache: Running, decider: Edgeside, origin: Running
) -> None:
    path = "/esi/home"
    pages = {cookie: page(cache.url, path, cookie) for cookie in ("c-alice", "c-bruno", "c-chloe")}
    for cookie, response in pages.items():
        assert response.status_code == 200
        text = response.text
        # The page arrived whole: the failing include (an invalid placement) did not cut it.
        assert text.endswith("<footer>end of page</footer></body></html>"), text
        assert "<esi:include" not in text
        fragment = re.search(r'data-placement="home_hero" data-variant="([^"]+)"', text)
        assert fragment, text
        expected = decide(decider.url, path, cookie, placements="home_hero")["x-edge-decision"]
        assert fragment.group(1) == expected.split("=", 1)[1]
    # One origin render for the shared body, whoever asked.
    assert len({render_number(r) for r in pages.values()}) == 1
    assert len(renders(origin.url, path)) == 1


@pytest.fixture()
def own_cache(
    varnishd_bin: str, cdn_data: Path, tmp_path: Path, origin: Running
) -> Iterator[tuple[Running, Edgeside]]:
    with (
        edgeside(cdn_data, log_dir=tmp_path) as decider,
        varnish(
            varnishd_bin, tmp_path, edgeside=_addr(decider.url), origin=_addr(origin.url)
        ) as running,
    ):
        yield running, decider


def test_edgeside_stopped_pages_and_esi_still_served(
    own_cache: tuple[Running, Edgeside], origin: Running
) -> None:
    cache, decider = own_cache
    assert page(cache.url, "/v/down", "c-alice").headers["x-edge-key"] != "fallback"
    decider.proc.terminate()
    decider.proc.wait(timeout=10)
    for cookie in ("c-bruno", None):
        response = page(cache.url, "/v/down", cookie)
        assert response.status_code == 200
        assert response.headers["x-edge-key"] == "fallback"
        assert 'data-fallback="edgeside-unavailable"' in response.text
    esi = page(cache.url, "/esi/down", "c-alice")
    assert esi.status_code == 200
    assert esi.text.endswith("<footer>end of page</footer></body></html>")
    assert "edgeside fragment unavailable" in esi.text


def test_vcl_names_no_placements() -> None:
    # Which placements a page has lives in the rules (`pages:`); the VCL only drops a client's.
    text = VARNISH_TEMPLATE.read_text()
    assert "X-Placements =" not in text and "unset req.http.X-Placements" in text


def test_uri_only_callout_personalises_from_cache(cache: Running, decider: Edgeside) -> None:
    # The VCL forwards the URI (and the site of the Host: shop-fr here), never placements.
    assert_personalised_from_cache(decider.url, zipf_load(cache.url, 400), site="shop-fr")
