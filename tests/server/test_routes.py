"""Fragments, headless reads, health, metrics and the OpenAPI document, on a real process."""

from __future__ import annotations

from pathlib import Path

from bench.procs import Edgeside, edgeside
from server.offline.demo import DIGEST_FILE, demo_digest, ensure_demo
from snapshots import store
from tests.server.conftest import ADMIN_TOKEN

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def test_fragment_is_html_for_an_esi_include(server: Edgeside) -> None:
    with server.client() as client:
        response = client.get(
            "/v1/fragments/home_recs?site=shop-uk", headers={"Cookie": "edgeside_id=c-chloe"}
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"].startswith("private, max-age=")
    assert 'data-placement="home_recs"' in response.text
    assert "edgeside-item" in response.text
    assert response.headers["x-edge-key"]


def test_fragment_for_a_hostile_placement_name_is_refused(server: Edgeside) -> None:
    with server.client() as client:
        response = client.get("/v1/fragments/%3Cscript%3E")
    assert response.status_code == 400
    assert "<script>" not in response.text


def test_profile_and_content_reads_need_the_token(server: Edgeside) -> None:
    with server.client() as client:
        assert client.get("/v1/profiles/cookie:c-alice").status_code == 401
        wrong = client.get("/v1/profiles/cookie:c-alice", headers={"Authorization": "Bearer no"})
        assert wrong.status_code == 401
        profile = client.get("/v1/profiles/cookie:c-alice", headers=AUTH)
        assert profile.status_code == 200
        body = profile.json()
        assert body["attributes"]["tier"] == "gold"
        by_canonical = client.get(f"/v1/profiles/{body['id']}", headers=AUTH)
        assert by_canonical.json() == body
        assert client.get("/v1/profiles/cookie:nobody", headers=AUTH).status_code == 404

        decided = client.post(
            "/v1/decide",
            json={"visitor": {"ids": {"cookie": "c-alice"}}, "placements": ["home_recs"]},
        ).json()
        item_id = decided["placements"][0]["content"][0]
        assert client.get(f"/v1/content/{item_id}").status_code == 401
        item = client.get(f"/v1/content/{item_id}", headers=AUTH)
        assert item.status_code == 200 and item.json()["id"] == item_id
        missing = client.get("/v1/content/nope", headers=AUTH)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_health_and_readiness(server: Edgeside) -> None:
    with server.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] is True
    assert {s["kind"] for s in body["snapshots"] if s["version"]} == {
        "profiles",
        "content",
        "rules",
    }
    assert body["signed"] is False
    assert any("EDGESIDE_SIGNING_KEY" in w for w in body["warnings"])
    # The sites the rules know: any other is decided as `default` and said (unknown_site).
    assert body["sites"] == ["default", "shop-de", "shop-fr", "shop-uk"]


def test_metrics_count_requests_and_decisions(server: Edgeside) -> None:
    with server.client() as client:
        client.get("/v1/edge?p=home_hero&site=shop-fr")
        text = client.get("/metrics").text
    assert 'edgeside_request_duration_seconds_bucket{route="edge",le="+Inf"}' in text
    assert 'edgeside_decisions_total{placement="home_hero"' in text
    assert 'edgeside_snapshot_info{kind="rules"' in text
    ages = [line for line in text.splitlines() if line.startswith("edgeside_snapshot_age_seconds{")]
    assert len(ages) == 3 and all(float(line.split()[-1]) >= 0 for line in ages)


def test_openapi_describes_the_routes_from_the_types(server: Edgeside) -> None:
    with server.client() as client:
        doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    assert {"/v1/decide", "/v1/edge", "/v1/fragments/{placement}"} <= set(doc["paths"])
    schemas = doc["components"]["schemas"]
    assert "DecideRequest" in schemas and "placements" in schemas["DecideRequest"]["properties"]
    assert "ErrorBody" in schemas


def test_unknown_route_is_a_404(server: Edgeside) -> None:
    with server.client() as client:
        assert client.get("/v2/nothing").status_code == 404


def test_demo_store_rebuilds_when_the_demo_files_change(tmp_path: Path) -> None:
    ensure_demo(tmp_path)
    stamp = tmp_path / DIGEST_FILE
    assert stamp.read_text().strip() == demo_digest()
    built = stamp.stat().st_mtime_ns
    ensure_demo(tmp_path)
    assert stamp.stat().st_mtime_ns == built  # unchanged demo: nothing rebuilt
    stamp.write_text("stale\n")  # as after a checkout that changed the demo data
    ensure_demo(tmp_path)
    assert stamp.read_text().strip() == demo_digest()  # rebuilt, then stamped
    assert all(store.active_path(tmp_path, k) for k in ("profiles", "content", "rules"))


def test_with_cors_the_hot_routes_answer_preflights(demo_data: Path, tmp_path: Path) -> None:
    config = tmp_path / "cors.yaml"
    config.write_text("cors_origins: ['https://shop.example']\n")
    origin = {"Origin": "https://shop.example"}
    with (
        edgeside(demo_data, args=["--config", str(config)], log_dir=tmp_path) as server,
        server.client() as client,
    ):
        preflight = client.options(
            "/v1/decide",
            headers={**origin, "Access-Control-Request-Method": "POST"},
        )
        decided = client.post("/v1/decide", json={"placements": ["home_hero"]}, headers=origin)
        edge = client.get("/v1/edge?p=home_hero", headers=origin)
        wrong = client.put("/v1/edge?p=home_hero")
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://shop.example"
    assert decided.status_code == 200
    assert decided.headers["access-control-allow-origin"] == "https://shop.example"
    assert edge.status_code == 204
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"
