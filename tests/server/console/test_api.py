"""The console's API against a real server: sign-in, refusals, check, preview, impact (equal to
the CLI's), shadow (a raising candidate never changes what is served), promote."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bench.procs import Edgeside, edgeside

from .conftest import CANDIDATE, DEMO_RULES, TOKEN, make_traffic, signed_in

pytestmark = pytest.mark.integration

# The demo rules with one more rule first on the hero, whose condition raises at run time for
# every profile: the schema says `country` is a number, the profiles hold text ("FR").
RAISING = DEMO_RULES.replace("    country: string\n", "    country: number\n").replace(
    "        rules:\n          # Personalised heroes",
    "        rules:\n          - id: broken\n            when: profile.country * 2 > 1\n"
    "            then: {variant: broken}\n          # Personalised heroes",
)
assert "id: broken" in RAISING


def test_sign_in_sets_a_strict_http_only_cookie_and_wrong_tokens_get_401(
    console_server: Edgeside,
) -> None:
    with httpx.Client(base_url=console_server.url) as client:
        bad = client.post("/console/api/session", json={"token": "wrong"})
        assert bad.status_code == 401
        assert bad.json() == {
            "error": {"code": "unauthorized", "message": "sign in", "field": None}
        }
        assert "set-cookie" not in bad.headers
        assert client.get("/console/api/rules").status_code == 401
        good = client.post("/console/api/session", json={"token": TOKEN})
        assert good.status_code == 200
        cookie = good.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
        assert client.get("/console/api/rules").status_code == 200


def test_forged_expired_or_foreign_sessions_get_401_without_detail(
    console_server: Edgeside,
) -> None:
    with signed_in(console_server) as (client, _):
        real = client.cookies["edgeside_console"]
        expires, nonce, tid, mac = real.split(".")
        forged = [
            f"{int(expires) + 10**6}.{nonce}.{tid}.{mac}",  # a later expiry under the old MAC
            f"{int(time.time()) - 5}.{nonce}.{tid}.{mac}",
            f"{expires}.{nonce}.{'0' * len(tid)}.{mac}",  # another token's id
            "garbage",
            "x" * 5000,
        ]
        for value in forged:
            response = httpx.get(
                console_server.url + "/console/api/rules",
                cookies={"edgeside_console": value},
            )
            assert response.status_code == 401
            assert response.json()["error"]["message"] == "sign in"


def test_changes_need_the_csrf_token_and_cross_site_requests_are_refused(
    console_server: Edgeside,
) -> None:
    with signed_in(console_server) as (client, csrf):
        body = {"text": DEMO_RULES}
        assert client.post("/console/api/check", json=body).status_code == 403
        wrong = client.post("/console/api/check", json=body, headers={"x-csrf-token": "0" * 64})
        assert wrong.status_code == 403
        ok = client.post("/console/api/check", json=body, headers={"x-csrf-token": csrf})
        assert ok.status_code == 200 and ok.json()["ok"] is True
        for headers in (
            {"x-csrf-token": csrf, "origin": "https://evil.example"},
            {"x-csrf-token": csrf, "sec-fetch-site": "cross-site"},
        ):
            refused = client.post("/console/api/check", json=body, headers=headers)
            assert refused.status_code == 403
            assert refused.json()["error"]["code"] == "cross_site"
        # Even sign-in: a login CSRF would put the victim in the attacker's session.
        login = httpx.post(
            console_server.url + "/console/api/session",
            json={"token": TOKEN},
            headers={"origin": "https://evil.example"},
        )
        assert login.status_code == 403


def test_bad_bodies_are_4xx_never_5xx(console_server: Edgeside) -> None:
    with signed_in(console_server) as (client, csrf):
        h = {"x-csrf-token": csrf}
        assert client.post("/console/api/check", content=b"{", headers=h).status_code == 400
        assert client.post("/console/api/check", json={"text": 5}, headers=h).status_code == 422
        assert client.post("/console/api/check", json={"nope": ""}, headers=h).status_code == 422
        big = {"text": "#" * (600 * 1024)}
        assert client.post("/console/api/check", json=big, headers=h).status_code == 413
        hour = {"context": {"hour": 99}}
        assert client.post("/console/api/preview", json=hour, headers=h).status_code == 422
        nosite = {"context": {"site": "<script>"}, "placements": []}
        response = client.post("/console/api/preview", json=nosite, headers=h)
        assert response.status_code in (200, 422)
        last = {"candidate": CANDIDATE, "last": 10**9}
        assert client.post("/console/api/impact", json=last, headers=h).status_code == 422


def test_check_gives_the_cli_diagnostics_at_line_and_column(
    console_server: Edgeside, tmp_path: Path
) -> None:
    typo = DEMO_RULES.replace("profile.tier in", "profile.tierr in")
    line = DEMO_RULES[: DEMO_RULES.index("profile.tier in")].count("\n") + 1
    with signed_in(console_server) as (client, csrf):
        got = client.post("/console/api/check", json={"text": typo}, headers={"x-csrf-token": csrf})
    result = got.json()
    assert result["ok"] is False
    errors = [d for d in result["diagnostics"] if d["severity"] == "error"]
    assert [(d["line"], d["code"]) for d in errors] == [(line, "unknown-attribute")]
    assert errors[0]["suggestion"] == "did you mean `tier`?"
    path = tmp_path / "rules.yaml"
    path.write_text(typo)
    cli = subprocess.run(
        [sys.executable, "-m", "server.cli", "rules", "check", str(path), "--json"],
        capture_output=True,
        check=False,
    )
    expected = json.loads(cli.stdout)["diagnostics"]
    for d in expected:
        d["file"] = "candidate.yaml"
    assert result["diagnostics"] == expected


def test_preview_known_and_anonymous_visitors_side_by_side(console_server: Edgeside) -> None:
    body = {
        "visitor": "cookie:c-alice",
        "context": {"site": "shop-fr", "hour": 12},
        "candidate": CANDIDATE,
        "placements": ["home_hero"],
    }
    with signed_in(console_server) as (client, csrf):
        known = client.post("/console/api/preview", json=body, headers={"x-csrf-token": csrf})
        anon = client.post(
            "/console/api/preview", json={**body, "visitor": ""}, headers={"x-csrf-token": csrf}
        )
    k = known.json()
    assert k["visitor"] is not None
    assert k["active"]["placements"][0]["rule"] == "gold_offer"
    assert k["candidate"]["placements"][0]["rule"] == "gold_offer"
    # The experiment may swap the variant for its arm; the control arm shows the rule's own.
    arm = k["active"]["placements"][0]["arm"]
    if arm == "control":
        assert k["candidate"]["placements"][0]["variant"] == "gold_offer_v2"
    segments = [t for t in k["active"]["trace"] if t["kind"] == "segment"]
    gold = next(t for t in segments if t["id"] == "gold_plus")
    assert gold["matched"] is True and gold["conditions"], "segment traces carry conditions"
    a = anon.json()
    assert a["visitor"] is None
    assert a["active"]["placements"][0]["variant"] == "default"
    assert a["candidate"]["placements"][0]["variant"] == "default"


def test_impact_equals_the_cli_for_the_same_log(
    console_server: Edgeside, console_data: Path, tmp_path: Path
) -> None:
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(CANDIDATE)
    with signed_in(console_server) as (client, csrf):
        page = client.post(
            "/console/api/impact",
            json={"candidate": CANDIDATE, "last": 500},
            headers={"x-csrf-token": csrf},
        ).json()
    argv = [sys.executable, "-m", "server.cli", "rules", "impact", str(candidate)]
    argv += ["--data", str(console_data), "--log", str(console_data / "logs"), "--last", "500"]
    cli = subprocess.run([*argv, "--json"], capture_output=True, check=True)
    report = json.loads(cli.stdout)
    assert report == page
    assert report["decisions"] > 0
    assert report["changed"] > 0, "gold visitors in the control arm get the renamed variant"
    hero = report["by_placement"]["home_hero"]
    assert {"from_variant": "gold_offer", "to_variant": "gold_offer_v2"} in [
        {k: t[k] for k in ("from_variant", "to_variant")} for t in hero["transitions"]
    ]
    assert report["by_placement"]["home_recs"]["changed"] == 0
    assert set(report["by_site"]) <= {"shop-fr", "shop-uk"}
    text = subprocess.run(argv, capture_output=True, check=True, text=True).stdout
    assert re.match(rf"{report['changed']} of {report['decisions']} decisions change", text)


def test_impact_streams_its_progress_then_the_same_report(console_server: Edgeside) -> None:
    """Asked for NDJSON, the replay answers as it goes (chunked: no length known up front):
    the log read, then the replay's progress with the time left, then the report the JSON form
    gives."""
    body = {"candidate": CANDIDATE, "last": 500}
    with signed_in(console_server) as (client, csrf):
        plain = client.post("/console/api/impact", json=body, headers={"x-csrf-token": csrf})
        headers = {"x-csrf-token": csrf, "accept": "application/x-ndjson"}
        with client.stream("POST", "/console/api/impact", json=body, headers=headers) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("application/x-ndjson")
            assert "content-length" not in r.headers
            lines = [json.loads(line) for line in r.iter_lines() if line]
    assert plain.status_code == 200
    *progress, last = lines
    assert last == {"result": plain.json()}
    phases = [p["progress"]["phase"] for p in progress]
    assert phases[0] == "read" and set(phases) == {"read", "replay"}
    assert phases == sorted(phases), "the log is read, then replayed"
    replay = [p["progress"] for p in progress if p["progress"]["phase"] == "replay"]
    total = replay[0]["total"]
    assert total >= plain.json()["decisions"] > 0
    done = [p["done"] for p in replay]
    assert done[0] == 0 and done[-1] == total and done == sorted(done)
    assert 2 < len(replay) <= 51, "bounded: at most 50 reports and the last, whatever N"
    assert all(p["eta_s"] is not None for p in replay[1:])
    assert replay[-1]["eta_s"] == 0


def test_a_streamed_impact_refuses_bad_input_before_it_begins(console_server: Edgeside) -> None:
    with signed_in(console_server) as (client, csrf):
        headers = {"x-csrf-token": csrf, "accept": "application/x-ndjson"}
        bad = client.post(
            "/console/api/impact", json={"candidate": "rules: [", "last": 5}, headers=headers
        )
        assert bad.status_code == 422 and bad.json()["check"]["ok"] is False
        huge = client.post(
            "/console/api/impact", json={"candidate": CANDIDATE, "last": 10**9}, headers=headers
        )
        assert huge.status_code == 422
        assert huge.headers["content-type"].startswith("application/json")


# Alone: beside the second test stream (load 5-12) the agreeing candidate measured agreement
# 0.984, not 1.0 (63 of 64 sampled decisions): the shadow is sampled within a budget of
# milliseconds and evaluated after the served answer, so how it fares depends on the CPU it gets.
@pytest.mark.alone
def test_a_raising_shadow_is_counted_and_never_changes_what_is_served(
    console_server: Edgeside, console_data: Path
) -> None:
    def served() -> list[str]:
        with httpx.Client(base_url=console_server.url) as c:
            return [
                c.get(
                    "/v1/edge?p=home_hero,home_recs&site=shop-fr&probe=1",
                    headers={"Cookie": f"edgeside_id={cookie}"},
                ).headers["x-edge-decision"]
                for cookie in ("c-alice", "c-bruno", "c-chloe", "nobody")
            ]

    before = served()
    with signed_in(console_server) as (client, csrf):
        h = {"x-csrf-token": csrf}
        started = client.post(
            "/console/api/shadow", json={"candidate": RAISING, "share": 1.0}, headers=h
        )
        assert started.status_code == 200, started.text
        make_traffic(console_server, console_data / "logs")
        assert served() == before
        deadline = time.monotonic() + 10
        status = client.get("/console/api/shadow").json()
        while status["sampled"] < 10 and time.monotonic() < deadline:
            time.sleep(0.3)
            status = client.get("/console/api/shadow").json()
        assert status["active"] is True
        assert status["sampled"] >= 10
        assert status["errors"] > 0
        metrics = httpx.get(console_server.url + "/metrics").text
        assert "edgeside_shadow_decisions_total" in metrics
        # A candidate that agrees: agreement 1.0 on the placements it saw.
        same = client.post(
            "/console/api/shadow", json={"candidate": DEMO_RULES, "share": 1.0}, headers=h
        )
        assert same.status_code == 200
        make_traffic(console_server, console_data / "logs")
        deadline = time.monotonic() + 10
        status = client.get("/console/api/shadow").json()
        while status["sampled"] < 10 and time.monotonic() < deadline:
            time.sleep(0.3)
            status = client.get("/console/api/shadow").json()
        assert status["agreement"] == 1.0 and status["errors"] == 0
        gone = client.post("/console/api/shadow/discard", json={}, headers=h).json()
        assert gone["active"] is False
        broken = client.post(
            "/console/api/shadow", json={"candidate": "sites: [", "share": 0.5}, headers=h
        )
        assert broken.status_code == 422 and broken.json()["check"]["ok"] is False


def test_promote_makes_the_shadow_the_active_rules(console_data: Path, tmp_path: Path) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(console_data, data, symlinks=True)
    env = {"EDGESIDE_ADMIN_TOKEN": TOKEN, "EDGESIDE_SIGNING_KEY": ""}
    with edgeside(data, env=env, log_dir=tmp_path) as server:
        probe = {"Cookie": "edgeside_id=nobody"}
        edge = server.url + "/v1/edge?p=home_hero&site=shop-fr"
        # The anonymous hero is the default, or the night sale after 22:00: both renamed.
        candidate = DEMO_RULES.replace("variant: default\n", "variant: promoted\n", 1)
        candidate = candidate.replace("variant: night_sale", "variant: promoted")
        assert httpx.get(edge, headers=probe).headers["x-edge-decision"] != ("home_hero=promoted")
        with signed_in(server) as (client, csrf):
            h = {"x-csrf-token": csrf}
            assert client.post("/console/api/shadow/promote", json={}, headers=h).status_code == 409
            client.post(
                "/console/api/shadow", json={"candidate": candidate, "share": 0.5}, headers=h
            )
            promoted = client.post("/console/api/shadow/promote", json={}, headers=h)
            assert promoted.status_code == 200, promoted.text
            assert promoted.json()["activated"] is True
            assert client.get("/console/api/shadow").json()["active"] is False
        deadline = time.monotonic() + 5
        got = ""
        while time.monotonic() < deadline:
            got = httpx.get(edge + "&n=" + str(time.monotonic()), headers=probe).headers[
                "x-edge-decision"
            ]
            if got == "home_hero=promoted":
                break
            time.sleep(0.1)
        assert got == "home_hero=promoted"
