"""OFREP over HTTP against a real server: the spec's error shapes for every kind of bad input
(never a 5xx), bulk ETag and If-None-Match, trust of the targeting key, the rate limit's 429 with
Retry-After, and the routes in `/openapi.json`."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from bench.procs import Edgeside
from server.ofrep.route import MAX_ATTRIBUTES, RATE_LIMIT
from tests.server.conftest import ADMIN_TOKEN

FLAG = "/ofrep/v1/evaluate/flags/home_hero"
BULK = "/ofrep/v1/evaluate/flags"
JSON = {"content-type": "application/json"}


@pytest.fixture()
def http(server: Edgeside) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def _ctx(key: str = "c-alice", **more: object) -> dict[str, object]:
    return {"context": {"targetingKey": key, "site": "shop-fr", "hour": 12, **more}}


def _failure(r: httpx.Response, status: int, code: str, key: str | None = "home_hero") -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["errorCode"] == code and isinstance(body["errorDetails"], str), body
    if key is not None:
        assert body["key"] == key
    return str(body["errorDetails"])


@pytest.mark.parametrize(
    ("body", "code", "detail"),
    [
        (b"", "TARGETING_KEY_MISSING", "no context"),
        (b"{}", "TARGETING_KEY_MISSING", "no context"),
        (b'{"context":{}}', "TARGETING_KEY_MISSING", "no targetingKey"),
        (b'{"context":{"targetingKey":""}}', "TARGETING_KEY_MISSING", "no targetingKey"),
        (b'{"context":{"targetingKey":7}}', "INVALID_CONTEXT", "$.context.targetingKey"),
        (b'{"context":{"targetingKey":"a\\u0000b"}}', "INVALID_CONTEXT", "targetingKey"),
        (b'{"context":{"targetingKey":"a","hour":"noon"}}', "INVALID_CONTEXT", "$.context.hour"),
        (b'{"context":{"targetingKey":"a","hour":24}}', "INVALID_CONTEXT", "$.context.hour"),
        (b'{"context":{"targetingKey":"a","consent":"yes"}}', "INVALID_CONTEXT", "consent"),
        (b'{"context":[]}', "INVALID_CONTEXT", "object"),
        (b'{"context":"c-alice"}', "INVALID_CONTEXT", "object"),
        (b"[]", "INVALID_CONTEXT", "object"),
        (b'{"context":{"targetingKey":', "PARSE_ERROR", "not valid JSON"),
        (b'{"context":{"targetingKey":"\xff"}}', "PARSE_ERROR", ""),
        (b"[" * 50_000, "INVALID_CONTEXT", "object"),
        (b'{"context":' + b"[" * 50_000, "INVALID_CONTEXT", "object"),
    ],
)
def test_bad_requests_get_the_spec_error_shapes(
    http: httpx.Client, body: bytes, code: str, detail: str
) -> None:
    single = http.post(FLAG, content=body, headers=JSON)
    assert detail in _failure(single, 400, code)
    bulk = http.post(BULK, content=body, headers=JSON)
    assert detail in _failure(bulk, 400, code, key=None)


def test_too_many_attributes_and_huge_bodies_are_bounded(http: httpx.Client) -> None:
    many = {f"a{i}": i for i in range(MAX_ATTRIBUTES + 1)}
    r = http.post(FLAG, json={"context": {"targetingKey": "c-alice", **many}})
    assert f"at most {MAX_ATTRIBUTES}" in _failure(r, 400, "INVALID_CONTEXT")
    # Ten thousand attributes do not fit the body limit: refused by bytes, before decoding.
    ten_k = {f"attribute{i}": i for i in range(10_000)}
    for path in (FLAG, BULK):
        r = http.post(path, json={"context": {"targetingKey": "c-alice", **ten_k}})
        assert r.status_code == 413 and "over" in r.json()["errorDetails"], r.text
    huge = http.post(FLAG, content=b" " * 5_000_000, headers=JSON)
    assert huge.status_code == 413 and "errorDetails" in huge.json()
    # Attributes edgeside does not read are ignored, whatever their type.
    odd = {"plan": {"nested": [1, None, {"x": True}]}, "age": 3.5, "tags": ["a"]}
    r = http.post(FLAG, json={"context": {"targetingKey": "c-alice", "hour": 12, **odd}})
    assert r.status_code == 200, r.text


def test_unknown_flags_are_404_flag_not_found(http: httpx.Client) -> None:
    for key in ("no_such_placement", "a b", "x" * 200, "home_hero/more", "%00"):
        r = http.post(f"{BULK}/{key}", json=_ctx())
        assert r.status_code == 404, (key, r.text)
        assert r.json()["errorCode"] == "FLAG_NOT_FOUND"


def test_not_post_or_not_json_is_refused_without_a_5xx(http: httpx.Client) -> None:
    assert http.get(FLAG).status_code == 405
    assert http.get(BULK).status_code == 405
    r = http.post(FLAG, content=b"targetingKey=c-alice", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "errorDetails" in r.json()


def test_single_flag_answer(http: httpx.Client) -> None:
    r = http.post(FLAG, json=_ctx())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["key"] == "home_hero" and body["value"] == body["variant"] == "gold_offer_big"
    assert body["reason"] == "SPLIT" and body["metadata"]["arm"] == "big_visual"
    # The same decision `/v1/decide` makes for the same visitor and context.
    decided = http.post(
        "/v1/decide",
        json={
            "visitor": {"ids": {"cookie": "c-alice"}},
            "context": {"site": "shop-fr", "hour": 12},
            "placements": ["home_hero"],
        },
    ).json()
    assert decided["placements"][0]["variant"] == body["value"]
    assert decided["key"] == body["metadata"]["decisionKey"]


def test_bulk_answers_every_placement_of_the_site_with_an_etag(http: httpx.Client) -> None:
    first = http.post(BULK, json=_ctx())
    assert first.status_code == 200, first.text
    flags = {f["key"]: f for f in first.json()["flags"]}
    assert flags["home_hero"]["value"] == "gold_offer_big"
    assert {"article_sidebar", "cart_upsell", "home_hero"} <= set(flags)
    reasons = {f["reason"] for f in flags.values()}
    assert reasons <= {"STATIC", "TARGETING_MATCH", "SPLIT", "DEFAULT"}
    tag = first.headers["etag"]
    assert tag.startswith('"') and tag.endswith('"')
    for header in (tag, f"W/{tag}", f'"other", {tag}', "*"):
        again = http.post(BULK, json=_ctx(), headers={"if-none-match": header})
        assert again.status_code == 304 and again.content == b"", header
        assert again.headers["etag"] == tag
    # Another visitor, or a stale tag: the whole answer again.
    other = http.post(BULK, json=_ctx("never-seen-2"), headers={"if-none-match": tag})
    assert other.status_code == 200 and other.headers["etag"] != tag
    stale = http.post(BULK, json=_ctx(), headers={"if-none-match": '"stale"'})
    assert stale.status_code == 200 and stale.headers["etag"] == tag


def test_only_an_authenticated_caller_names_other_identifiers(http: httpx.Client) -> None:
    alias = _ctx("customer_id:C00001")
    assert http.post(FLAG, json=alias).json()["value"] == "default"  # a cookie value nobody has
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    assert http.post(FLAG, json=alias, headers=auth).json()["value"] == "gold_offer_big"
    for bad in ("Bearer wrong", "Basic abc", "Bearer", ""):
        r = http.post(FLAG, json=alias, headers={"authorization": bad})
        assert r.status_code == 401 and "errorDetails" in r.json(), bad
    # Without consent, not even an authenticated caller gets a profile read.
    no_consent = _ctx("customer_id:C00001", consent=False)
    assert http.post(FLAG, json=no_consent, headers=auth).json()["value"] == "default"


def test_a_flood_for_one_targeting_key_gets_429_with_retry_after(http: httpx.Client) -> None:
    body = _ctx("flooding-cookie")
    statuses = [http.post(FLAG, json=body).status_code for _ in range(RATE_LIMIT + 5)]
    assert statuses.count(429) >= 5 and set(statuses) == {200, 429}, statuses
    r = http.post(BULK, json=body)
    assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 10
    assert "errorDetails" in r.json()
    # Other visitors, and authenticated callers, are not held back by it.
    assert http.post(FLAG, json=_ctx("another-cookie")).status_code == 200
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    assert http.post(FLAG, json=body, headers=auth).status_code == 200


def test_openapi_names_the_ofrep_routes(http: httpx.Client) -> None:
    doc = http.get("/openapi.json").json()
    single = doc["paths"]["/ofrep/v1/evaluate/flags/{key}"]["post"]
    bulk = doc["paths"]["/ofrep/v1/evaluate/flags"]["post"]
    assert {"200", "400", "404", "429"} <= set(single["responses"])
    assert {"200", "304", "400", "429"} <= set(bulk["responses"])
    assert "EvaluationSuccess" in doc["components"]["schemas"]
