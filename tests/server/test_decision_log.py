"""The decision log on a real server: decisions and events as NDJSON, no identifiers without
consent, and a dead sink degrading to counted drops."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from bench.procs import edgeside, free_port

TOKEN = "log-test-token-0123456789"


def _records(log_dir: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(log_dir.glob("decisions-*.ndjson")):
        out.extend(json.loads(line) for line in path.read_text().splitlines() if line)
    return out


def _wait_for(log_dir: Path, predicate: Any, timeout: float = 3.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        records = _records(log_dir) if log_dir.exists() else []
        if predicate(records) or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def test_decisions_and_events_are_logged_without_identifiers_of_non_consenting(
    demo_copy: Path, tmp_path: Path
) -> None:
    log_dir = tmp_path / "logs"
    config = tmp_path / "edgeside.yaml"
    config.write_text(f"decision_log: {{dir: {log_dir}, flush_interval_s: 0.05}}\n")
    env = {"EDGESIDE_ADMIN_TOKEN": TOKEN}
    with edgeside(demo_copy, workers=2, env=env, args=["--config", str(config)]) as server:
        with server.client() as client:
            bruno = client.get(
                "/v1/profiles/cookie:c-bruno", headers={"Authorization": f"Bearer {TOKEN}"}
            ).json()
            consenting = {
                "visitor": {"ids": {"cookie": "c-alice"}},
                "context": {"site": "shop-fr", "geo": {"country": "FR"}, "hour": 9},
                "placements": ["home_hero", "home_recs"],
            }
            refusing = {
                "visitor": {"ids": {"cookie": "c-bruno"}},
                "context": {"site": "shop-de", "geo": {"country": "DE"}, "consent": False},
                "placements": ["home_hero"],
            }
            assert client.post("/v1/decide", json=consenting).status_code == 200
            assert client.post("/v1/decide", json=refusing).status_code == 200
            edge = client.get(
                "/v1/edge?p=home_hero&site=shop-de",
                headers={"Cookie": "edgeside_id=c-bruno", "X-Consent": "no"},
            )
            assert edge.status_code == 204
            clicks = {
                "events": [
                    {
                        "type": "click",
                        "visitor": {"ids": {"cookie": "c-alice"}},
                        "placement": "home_hero",
                        "variant": "gold_offer",
                    },
                ]
            }
            assert client.post("/v1/events", json=clicks).status_code == 202
            bruno_click = {
                "events": [
                    {
                        "type": "click",
                        "visitor": {"ids": {"cookie": "c-bruno"}},
                        "placement": "home_hero",
                        "variant": "default",
                    },
                ]
            }
            answer = client.post("/v1/events", json=bruno_click, headers={"X-Consent": "no"})
            assert answer.status_code == 202
        records = _wait_for(log_dir, lambda r: len(r) >= 5)
    decisions = [r for r in records if r["kind"] == "decision"]
    events = [r for r in records if r["kind"] == "event"]
    assert len(decisions) == 3 and len(events) == 2, records
    alice = next(r for r in decisions if r["site"] == "shop-fr")
    assert alice["visitor"] is not None and alice["visitor"].startswith("p:")
    assert alice["country"] == "FR" and alice["hour"] == 9
    assert "profiles=" in alice["snapshots"] and alice["key"]
    assert [p["placement"] for p in alice["placements"]] == ["home_hero", "home_recs"]
    assert alice["segments"]
    for r in decisions:
        if r["site"] == "shop-de":
            assert r["visitor"] is None and r["segments"] == []
    assert {e["visitor"] is None for e in events} == {True, False}
    text = "".join(p.read_text() for p in log_dir.glob("*.ndjson"))
    # Neither the cookie nor the canonical id of the visitor without consent appears anywhere.
    assert "c-bruno" not in text
    assert bruno["id"] not in text


def test_a_dead_sink_means_counted_drops_not_failed_decisions(
    demo_copy: Path, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/ingest"  # nothing listens there
    config = tmp_path / "edgeside.yaml"
    config.write_text(
        f"decision_log: {{url: '{dead}', flush_interval_s: 0.05, retries: 1, max_buffer: 50}}\n"
    )
    body = {"visitor": {"ids": {"cookie": "c-alice"}}, "placements": ["home_hero"]}
    with (
        edgeside(demo_copy, workers=1, args=["--config", str(config)]) as server,
        server.client() as client,
    ):
        started = time.monotonic()
        for i in range(200):
            body["context"] = {"hour": i % 24}
            assert client.post("/v1/decide", json=body).status_code == 200
        elapsed = time.monotonic() - started
        deadline = time.monotonic() + 3.0
        dropped = 0.0
        while time.monotonic() < deadline:
            for line in client.get("/metrics").text.splitlines():
                if line.startswith("edgeside_decision_log_records_total{") and "dropped" in line:
                    dropped += float(line.rsplit(" ", 1)[1])
            if dropped >= 200:
                break
            dropped = 0.0
            time.sleep(0.1)
    # Every record is accounted for as a drop (sink down or buffer full); decisions never waited.
    assert dropped >= 200, dropped
    assert elapsed < 10.0


def test_sink_receives_batches(demo_copy: Path, tmp_path: Path) -> None:
    import http.server
    import threading

    got: list[bytes] = []

    class Sink(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(self.rfile.read(int(self.headers["content-length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        config = tmp_path / "edgeside.yaml"
        url = f"http://127.0.0.1:{httpd.server_address[1]}/ingest"
        config.write_text(f"decision_log: {{url: '{url}', flush_interval_s: 0.05}}\n")
        body = {"visitor": {"ids": {"cookie": "c-alice"}}, "placements": ["home_hero"]}
        with edgeside(demo_copy, workers=1, args=["--config", str(config)]) as server:
            with server.client() as client:
                for _ in range(3):
                    assert client.post("/v1/decide", json=body).status_code == 200
            deadline = time.monotonic() + 3.0
            while sum(len(b.splitlines()) for b in got) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        httpd.shutdown()
        httpd.server_close()
    lines = [json.loads(x) for b in got for x in b.splitlines()]
    assert len(lines) == 3 and all(r["kind"] == "decision" for r in lines)


def test_an_unwritable_log_directory_is_counted_drops(tmp_path: Path) -> None:
    import asyncio

    from server.config import DecisionLogSettings
    from server.decision_log import DecisionLog

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the log directory should be")
    dlog = DecisionLog(DecisionLogSettings(dir=str(blocker / "logs"), max_buffer=10))
    for i in range(15):
        dlog.add({"t": float(i), "kind": "decision"})
    asyncio.run(dlog.flush())
    assert dlog.dropped == {"buffer_full": 5, "disk_error": 10}
    assert dlog.written == 0 and not dlog.buffer


def test_a_flush_to_files_is_one_write_in_one_thread_hand_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from server.config import DecisionLogSettings
    from server.decision_log import DecisionLog

    dlog = DecisionLog(DecisionLogSettings(dir=str(tmp_path / "logs"), batch=1000))
    writes: list[int] = []
    write = dlog._write

    def counted(payload: bytes) -> bool:
        writes.append(payload.count(b"\n"))
        return write(payload)

    monkeypatch.setattr(dlog, "_write", counted)
    for i in range(2500):
        dlog.add({"t": float(i), "kind": "decision"})
    asyncio.run(dlog.flush())
    dlog.close()

    # Not one per `batch` (three): each costs the event loop GIL hand-overs with the thread.
    assert writes == [2500]
    assert dlog.written == 2500 and not dlog.buffer
    assert [r["t"] for r in _records(tmp_path / "logs")] == [float(i) for i in range(2500)]
