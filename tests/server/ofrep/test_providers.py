"""The OpenFeature providers, unmodified from PyPI and npm, against a real edgeside process: a
known visitor gets a personalised value, an unknown one the default, an unknown flag the SDK's
fallback (FLAG_NOT_FOUND), and the web provider's polling re-fetch is answered 304.

`hour: 12` pins the clock the demo rules read (a night-time rule would otherwise decide for the
unknown visitor at night)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from bench.procs import Edgeside
from tests.conftest import require_binary
from tests.server.conftest import ADMIN_TOKEN

JS = Path(__file__).with_name("js")


@pytest.fixture()
def providers() -> Iterator[list[OFREPProvider]]:
    """Providers made by a test: shut down and their HTTP sessions closed after it (the provider
    leaves its `requests.Session` open)."""
    made: list[OFREPProvider] = []
    yield made
    api.shutdown()
    for provider in made:
        provider.session.close()


def _client(
    made: list[OFREPProvider], url: str, name: str, headers: dict[str, str] | None = None
) -> OpenFeatureClient:
    provider = OFREPProvider(url, headers_factory=(lambda: headers) if headers else None)
    made.append(provider)
    api.set_provider(provider, name)
    return api.get_client(name)


@pytest.fixture()
def client(server: Edgeside, providers: list[OFREPProvider]) -> OpenFeatureClient:
    return _client(providers, server.url, "ofrep-cookie")


def _context(key: str, **more: object) -> EvaluationContext:
    return EvaluationContext(key, {"site": "shop-fr", "hour": 12, **more})


def test_python_provider_known_visitor_gets_the_personalised_variant(
    client: OpenFeatureClient,
) -> None:
    details = client.get_string_details("home_hero", "fallback", _context("c-alice"))
    assert details.error_code is None, details
    assert details.value == details.variant == "gold_offer_big"
    assert details.reason == Reason.SPLIT
    meta = details.flag_metadata
    assert meta["rule"] == "gold_offer" and meta["experiment"] == "hero_gold_2026"
    assert meta["arm"] == "big_visual" and meta["contentIds"] == "ban-fr-running"
    assert re.fullmatch(r"[0-9a-f]{16}", str(meta["decisionKey"]))


def test_python_provider_unknown_visitor_gets_the_default(client: OpenFeatureClient) -> None:
    details = client.get_string_details("home_hero", "fallback", _context("never-seen-1"))
    assert (details.value, details.reason, details.error_code) == ("default", Reason.DEFAULT, None)
    assert "rule" not in details.flag_metadata


def test_python_provider_without_consent_gets_the_default(client: OpenFeatureClient) -> None:
    details = client.get_string_details("home_hero", "x", _context("c-alice", consent=False))
    assert details.value == "default"


def test_python_provider_unknown_flag_and_missing_key(client: OpenFeatureClient) -> None:
    missing = client.get_string_details("no_such_placement", "fallback", _context("c-alice"))
    assert (missing.value, missing.error_code) == ("fallback", ErrorCode.FLAG_NOT_FOUND)
    no_key = client.get_string_details("home_hero", "fallback", EvaluationContext(None, {}))
    assert (no_key.value, no_key.error_code) == ("fallback", ErrorCode.TARGETING_KEY_MISSING)
    wrong = client.get_string_details("home_hero", "fallback", _context("c-alice", hour="noon"))
    assert (wrong.value, wrong.error_code) == ("fallback", ErrorCode.INVALID_CONTEXT)


def test_python_provider_names_other_identifiers_only_with_the_token(
    server: Edgeside, providers: list[OFREPProvider]
) -> None:
    """`customer_id:C00001` is Alice to an authenticated caller; without credentials it is read
    as a cookie value nobody has, so it gets the default."""
    token = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    bad = {"Authorization": "Bearer not-the-token"}
    ctx = _context("customer_id:C00001")
    trusted = _client(providers, server.url, "trusted", token).get_string_details(
        "home_hero", "x", ctx
    )
    cookie = _client(providers, server.url, "cookie").get_string_details("home_hero", "x", ctx)
    refused = _client(providers, server.url, "bad", bad).get_string_details("home_hero", "x", ctx)
    assert trusted.value == "gold_offer_big"
    assert cookie.value == "default"
    assert (refused.value, refused.error_code) == ("x", ErrorCode.GENERAL)
    assert refused.error_message == "unauthorized"


def test_js_web_provider_against_a_real_server(server: Edgeside) -> None:
    node = require_binary("node")
    if not (JS / "node_modules").is_dir():
        if os.environ.get("EDGESIDE_REQUIRE_INTEGRATION"):
            pytest.fail("run `npm ci` in tests/server/ofrep/js (.ci/run does)")
        pytest.skip("tests/server/ofrep/js has no node_modules: run `npm ci` there")

    def bulk_304() -> int:
        with server.client() as http:
            text = http.get("/metrics").text
        found = re.search(
            r'edgeside_responses_total\{route="ofrep_bulk",status="304"\} (\d+)', text
        )
        return int(found.group(1)) if found else 0

    before = bulk_304()
    out = subprocess.run(
        [node, "evaluate.mjs", server.url, "200"],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    seen = {line["who"]: line for line in map(json.loads, out.stdout.splitlines())}
    assert seen["known"]["value"] == "gold_offer_big" and seen["known"]["reason"] == "SPLIT"
    assert seen["known"]["metadata"]["rule"] == "gold_offer"
    assert seen["unknown"]["value"] == "default" and seen["unknown"]["reason"] == "DEFAULT"
    assert seen["missing"]["value"] == "fallback" and seen["missing"]["error"] == "FLAG_NOT_FOUND"
    # The provider polled every 200 ms for 800 ms with the ETag of its last answer: unchanged
    # flags came back 304 (the metrics are per worker; the session server has one).
    assert bulk_304() - before >= 2
