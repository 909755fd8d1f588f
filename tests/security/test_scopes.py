"""Scoped credentials and identity by trust level (issue 14, defects 5 and 6; SPEC §6 Trust).

Every non-public route is read from the application's own route table and must map to a scope
here (a new route added without one fails `test_every_route_has_a_scope`); against a real server,
each answers 401 without a token, 403 naming its scope to a token of any other scope, and serves
both rotation tokens of its own scope and the admin token. On the old code there were no scopes:
any admin-token holder could do everything, `/v1/decide` by `customer_id` answered anyone, and
`X-Visitor-Id` was honoured from anyone.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from bench.procs import edgeside
from server import auth
from tests.provekit import ADMIN_TOKEN, prove_copy, prove_data
from tests.security.test_security_review import PUBLIC, app_routes, concrete

__all__ = ["prove_copy", "prove_data"]

# Route prefix -> the scope it needs. /metrics is public until a metrics token is configured.
SCOPE_OF = {
    "/v1/admin/": "push",
    "/v1/profiles/": "profiles",
    "/v1/content/": "profiles",
    "/console": "explain",
}
# Routes that need two scopes, in the order they are checked: the console's promote pushes a
# rules snapshot, so it needs `push` beside the console's `explain`.
BOTH = {"/console/api/shadow/promote": ("explain", "push")}
TOKENS = {scope: (f"{scope}-token-a-7c1", f"{scope}-token-b-9e4") for scope in auth.SCOPES}


def scopes_of(path: str) -> tuple[str, ...]:
    return BOTH.get(path) or (scope_of(path),)


def scope_of(path: str) -> str:
    for prefix, scope in SCOPE_OF.items():
        if path.startswith(prefix):
            return scope
    raise AssertionError(f"{path}: a non-public route with no scope in SCOPE_OF")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def env() -> dict[str, str]:
    out = {
        f"EDGESIDE_TOKENS_{scope.upper()}": ",".join(auth.digest(t.encode()) for t in pair)
        for scope, pair in TOKENS.items()
    }
    out["EDGESIDE_ADMIN_TOKEN"] = ADMIN_TOKEN
    return out


def test_every_route_has_a_scope(prove_copy: Path) -> None:
    guarded = [p for _, p in app_routes(prove_copy) if p not in PUBLIC]
    assert guarded
    for path in guarded:
        assert scope_of(path) in auth.SCOPES


def test_credentials_are_digests_and_checked_per_scope() -> None:
    with pytest.raises(auth.ConfigError):
        auth.Credentials.from_environ({"EDGESIDE_TOKENS_PUSH": "a-plain-token"})
    with pytest.raises(auth.ConfigError):
        auth.Credentials.from_environ({"EDGESIDE_TOKENS_PUHS": auth.digest(b"x")})
    creds = auth.Credentials.from_environ(env())
    assert creds.scopes_of(TOKENS["push"][1].encode()) == {"push"}
    assert creds.scopes_of(ADMIN_TOKEN.encode()) == set(auth.SCOPES)
    assert creds.scopes_of(b"nope") == set()
    headers = {b"authorization": f"Bearer {TOKENS['decide'][0]}".encode()}
    assert auth.require(headers, "decide", creds) is None
    refused = auth.require(headers, "push", creds)
    assert refused is not None and refused.status == 403 and "`push`" in refused.message
    scope = {"type": "http", "headers": list(headers.items()), "query_string": b"token=x"}
    refused = auth.require(scope, "decide", creds)
    assert refused is not None and refused.code == "token_in_query"
    # No metrics token configured: /metrics stays public.
    assert auth.require({}, "metrics", auth.Credentials.from_environ({})) is None
    none = auth.require({}, "push", auth.Credentials.from_environ({}))
    assert none is not None and none.status == 401


def test_each_route_answers_only_its_scope(prove_copy: Path, tmp_path: Path) -> None:
    guarded = [(m, p) for m, p in app_routes(prove_copy) if p not in PUBLIC]
    with (
        edgeside(prove_copy, workers=1, env=env(), log_dir=tmp_path) as server,
        httpx.Client(base_url=server.url, timeout=30) as c,
    ):
        for method, path in guarded:
            url, needs = concrete(path), scopes_of(path)
            need = needs[0]
            r = c.request(method, url, content=b"x")
            assert r.status_code == 401, (method, url, r.status_code)
            for scope, (token, _) in TOKENS.items():
                r = c.request(method, url, headers=bearer(token), content=b"x")
                missing = [n for n in needs if n != scope]
                if not missing:
                    assert r.status_code not in (401, 403), (method, url, scope, r.text)
                else:
                    assert r.status_code == 403, (method, url, scope, r.status_code)
                    assert f"`{missing[0]}`" in r.json()["error"]["message"], r.text
            rotated = [TOKENS[need][1]] if len(needs) == 1 else []
            for token in (*rotated, ADMIN_TOKEN):
                r = c.request(method, url, headers=bearer(token), content=b"x")
                assert r.status_code not in (401, 403), (method, url, r.text)
            r = c.request(method, f"{url}?token={TOKENS[need][0]}", content=b"x")
            assert r.status_code == 401 and r.json()["error"]["code"] == "token_in_query"
        # /metrics: a metrics token is configured here, so it is needed.
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers=bearer(TOKENS["push"][0])).status_code == 403
        assert c.get("/metrics", headers=bearer(TOKENS["metrics"][1])).status_code == 200
        # explain: its own scope.
        body = {"visitor": {"ids": {"cookie": "c-alice"}}, "placements": ["home_hero"]}
        r = c.post("/v1/decide?explain=1", json=body, headers=bearer(TOKENS["decide"][0]))
        assert r.status_code == 403 and "`explain`" in r.json()["error"]["message"]
        r = c.post("/v1/decide?explain=1", json=body, headers=bearer(TOKENS["explain"][0]))
        assert r.status_code == 200, r.text


def test_naming_a_visitor_by_another_id_needs_the_decide_scope(
    prove_copy: Path, tmp_path: Path
) -> None:
    body = {"visitor": {"ids": {"customer_id": "C00003"}}, "placements": ["home_hero"]}
    edge = "/v1/edge?p=home_hero,home_recs&site=shop-fr"
    with (
        edgeside(prove_copy, workers=1, env=env(), log_dir=tmp_path) as server,
        httpx.Client(base_url=server.url, timeout=30) as c,
    ):
        trusted = c.post("/v1/decide", json=body, headers=bearer(TOKENS["decide"][0]))
        assert trusted.status_code == 200 and trusted.json()["segments"], trusted.text
        for _ in range(2):  # the second would be a memo hit if the memo ignored the caller
            r = c.post("/v1/decide", json=body)
            assert r.status_code == 401, r.text
            assert "`decide`" in r.json()["error"]["message"]
            assert "gold" not in r.text
        canonical = {"visitor": {"id": "p-000003"}, "placements": ["home_hero"]}
        assert c.post("/v1/decide", json=canonical).status_code == 401
        r = c.post("/v1/decide", json=body, headers=bearer(TOKENS["push"][0]))
        assert r.status_code == 403 and "`decide`" in r.json()["error"]["message"]
        own = {"visitor": {"ids": {"cookie": "c-nobody-1"}}, "placements": ["home_hero"]}
        assert c.post("/v1/decide", json=own).status_code == 200
        # /v1/edge: X-Visitor-Id from anyone is ignored (fail open: a stranger's answer).
        stranger = c.get(edge).headers.get("x-edge-segments", "")
        named = {"X-Visitor-Id": "customer_id:C00003"}
        with_token = c.get(edge, headers={**named, **bearer(TOKENS["decide"][0])})
        assert with_token.status_code == 204
        assert with_token.headers.get("x-edge-segments", "") != stranger
        for _ in range(3):  # repeats: the protocol shortcut's memo must not leak it either
            r = c.get(edge, headers=named)
            assert r.status_code == 204
            assert r.headers.get("x-edge-segments", "") == stranger, r.headers
        # OFREP: a targeting key of another id type is read as a cookie value without the scope,
        # personalised with `decide`, and a token of another scope is a 403 in the spec's shape.
        flag = "/ofrep/v1/evaluate/flags/home_hero"
        ofrep = {"context": {"targetingKey": "customer_id:C00001", "site": "shop-fr", "hour": 12}}
        assert c.post(flag, json=ofrep).json()["value"] == "default"
        r = c.post(flag, json=ofrep, headers=bearer(TOKENS["decide"][1]))
        assert r.json()["value"] == "gold_offer_big", r.text
        r = c.post(flag, json=ofrep, headers=bearer(TOKENS["push"][0]))
        assert r.status_code == 403 and "errorDetails" in r.json(), r.text
