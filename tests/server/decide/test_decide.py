"""`POST /v1/decide` against a real uvicorn process: the API apps, e-mail and call centres use."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from bench.procs import Edgeside
from tests.server.conftest import ADMIN_TOKEN

JSON = {"content-type": "application/json"}


def decide(client: httpx.Client, body: dict[str, Any], **params: str) -> httpx.Response:
    return client.post("/v1/decide", json=body, params=params)


def test_a_known_visitor_gets_personal_decisions(server: Edgeside) -> None:
    body = {
        "visitor": {"ids": {"cookie": "c-alice"}},
        "context": {"site": "shop-fr", "locale": "fr-FR", "geo": {"country": "FR"}},
        "placements": ["home_hero", "home_recs"],
    }
    with server.client() as client:
        known = decide(client, body).json()
        body["visitor"] = {"ids": {"cookie": "someone-new"}}
        anonymous = decide(client, body).json()
    assert [p["placement"] for p in known["placements"]] == ["home_hero", "home_recs"]
    assert known["key"] != anonymous["key"]
    assert set(known["snapshots"]) == {"profiles", "content", "rules"}
    assert known["segments"] != anonymous["segments"]
    assert isinstance(known["ttl"], int)


def test_decide_and_edge_agree_on_the_key(server: Edgeside) -> None:
    body = {
        "visitor": {"ids": {"cookie": "c-bruno"}},
        "context": {"site": "shop-de", "geo": {"country": "DE"}},
        "placements": ["home_hero", "home_recs"],
    }
    with server.client() as client:
        key = decide(client, body).json()["key"]
        edge = client.get(
            "/v1/edge?p=home_hero,home_recs&site=shop-de",
            headers={"Cookie": "edgeside_id=c-bruno", "CF-IPCountry": "DE"},
        )
    assert edge.headers["x-edge-key"] == key


def test_render_returns_the_chosen_items(server: Edgeside) -> None:
    body = {
        "visitor": {"ids": {"cookie": "c-chloe"}},
        "context": {"site": "shop-uk"},
        "placements": ["home_recs"],
        "render": True,
    }
    with server.client() as client:
        answer = decide(client, body).json()
    chosen = answer["placements"][0]["content"]
    assert chosen, answer
    assert set(answer["items"]) == set(chosen)
    assert all(item["title"] for item in answer["items"].values())


def test_no_placements_decides_the_context_page(server: Edgeside) -> None:
    body: dict[str, Any] = {
        "visitor": {"ids": {"cookie": "c-alice"}},
        "context": {"url": "/cart?x=1"},
        "placements": [],
    }
    with server.client() as client:
        cart = decide(client, body).json()
        body["context"] = {"path": "no/such/page"}  # not a path (the demo's `/*` takes any)
        nothing = decide(client, body).json()
    assert [p["placement"] for p in cart["placements"]] == ["cart_upsell"]
    assert (nothing["placements"], nothing["key"]) == ([], "none")


def test_explain_needs_the_admin_token(server: Edgeside) -> None:
    body = {"visitor": {"ids": {"cookie": "c-alice"}}, "placements": ["home_hero"]}
    with server.client() as client:
        refused = decide(client, body, explain="1")
        traced = client.post(
            "/v1/decide?explain=1",
            json=body,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthorized"
    assert traced.status_code == 200
    assert traced.json()["trace"]


def test_unknown_placement_is_named(server: Edgeside) -> None:
    body = {"placements": ["home_hero", "no_such_slot"], "context": {"site": "shop-fr"}}
    with server.client() as client:
        response = decide(client, body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "unknown_placement"
    assert error["field"] == "$.placements[1]"


BAD_BODIES: list[tuple[str, bytes, dict[str, str], int, str]] = [
    ("malformed json", b'{"placements": [', JSON, 400, "malformed_json"),
    ("invalid utf-8", b'{"placements": ["\xff\xfe"]}', JSON, 400, "malformed_json"),
    ("wrong type", b'{"placements": "home_hero"}', JSON, 422, "invalid_request"),
    ("unknown field", b'{"placements": ["home_hero"], "extra": 1}', JSON, 422, "invalid_request"),
    ("missing field", b'{"visitor": {}}', JSON, 422, "invalid_request"),
    ("no content type", b'{"placements": ["home_hero"]}', {}, 415, "unsupported_media_type"),
    (
        "10 000 placements",
        b'{"placements": [%s]}' % b",".join([b'"p"'] * 10_000),
        JSON,
        422,
        "bad_placements",
    ),
    ("placement name", b'{"placements": ["a\\r\\nb"]}', JSON, 422, "bad_placements"),
]


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [case[1:] for case in BAD_BODIES],
    ids=[case[0] for case in BAD_BODIES],
)
def test_bad_input_is_a_4xx_with_a_json_error(
    server: Edgeside, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    with server.client() as client:
        response = client.post("/v1/decide", content=body, headers=headers)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]


def test_validation_errors_carry_the_field_path(server: Edgeside) -> None:
    with server.client() as client:
        response = client.post(
            "/v1/decide", json={"placements": ["home_hero"], "visitor": {"id": 42}}
        )
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "$.visitor.id"


def test_oversized_body_is_refused_before_it_is_read(server: Edgeside) -> None:
    with server.client() as client:
        response = client.post("/v1/decide", content=b" " * (2 * 1024 * 1024), headers=JSON)
    assert response.status_code == 413


def test_many_placements_within_the_body_limit(server: Edgeside) -> None:
    body = {"placements": [f"p{i}" for i in range(1000)]}
    with server.client() as client:
        response = decide(client, body)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "$.placements"
