"""The console's scopes on a real server with two workers (issue 14): any token holding `explain`
signs in; promote — a rules push — needs `push` too; a session is valid on every worker.

Before, only the admin token signed in (the session key was derived from it): an explain-only
token got 401, so these tests fail on the old code at the first sign-in.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from bench.procs import edgeside
from server.auth import digest

from .conftest import DEMO_RULES, TOKEN

pytestmark = pytest.mark.integration

EXPLAIN = "console-explain-only-7d41"
PUSH = "console-push-only-0c9e"


def sign_in(url: str, token: str) -> httpx.Response:
    return httpx.post(url + "/console/api/session", json={"token": token})


def test_an_explain_token_previews_and_shadows_but_promote_needs_push(
    console_data: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(console_data, data, symlinks=True)
    env = {
        "EDGESIDE_ADMIN_TOKEN": TOKEN,
        "EDGESIDE_TOKENS_EXPLAIN": digest(EXPLAIN.encode()),
        "EDGESIDE_TOKENS_PUSH": digest(PUSH.encode()),
        "EDGESIDE_SIGNING_KEY": "",
    }
    candidate = DEMO_RULES.replace("variant: default\n", "variant: promoted\n", 1)
    with edgeside(data, workers=2, env=env, log_dir=tmp_path) as server:
        url = server.url
        pushing = sign_in(url, PUSH)  # a valid token, but not one for the console
        assert pushing.status_code == 403, pushing.text
        assert pushing.json()["error"]["field"] == "explain"
        assert "set-cookie" not in pushing.headers
        answer = sign_in(url, EXPLAIN)
        assert answer.status_code == 200, answer.text
        assert answer.json()["scopes"] == ["explain"]
        cookies = {"edgeside_console": answer.cookies["edgeside_console"]}
        h = {"x-csrf-token": answer.json()["csrf"]}
        # Fresh connections: the kernel spreads them over both workers; each accepts the cookie.
        for _ in range(12):
            assert httpx.get(url + "/console/api/rules", cookies=cookies).status_code == 200
        with httpx.Client(base_url=url, cookies=cookies, headers=h, timeout=30) as client:
            preview = client.post("/console/api/preview", json={"candidate": candidate})
            assert preview.status_code == 200, preview.text
            shadowed = client.post("/console/api/shadow", json={"candidate": candidate})
            assert shadowed.status_code == 200, shadowed.text
            refused = client.post("/console/api/shadow/promote", json={})
            assert refused.status_code == 403, refused.text
            error = refused.json()["error"]
            assert error["field"] == "push" and "`push` scope" in error["message"]
            assert client.get("/console/api/shadow").json()["active"] is True  # nothing changed
        # The same with the token as a bearer header (scripts).
        bearer = {"authorization": f"Bearer {EXPLAIN}"}
        assert httpx.post(url + "/console/api/shadow/promote", headers=bearer).status_code == 403
        bearer_push = {"authorization": f"Bearer {PUSH}"}
        assert httpx.get(url + "/console/api/rules", headers=bearer_push).status_code == 403
        # The admin token holds every scope: its session promotes.
        admin = sign_in(url, TOKEN)
        assert admin.status_code == 200 and "push" in admin.json()["scopes"]
        with httpx.Client(
            base_url=url,
            cookies={"edgeside_console": admin.cookies["edgeside_console"]},
            headers={"x-csrf-token": admin.json()["csrf"]},
            timeout=60,
        ) as client:
            promoted = client.post("/console/api/shadow/promote", json={})
            assert promoted.status_code == 200, promoted.text
            assert promoted.json()["activated"] is True
