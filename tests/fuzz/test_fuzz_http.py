"""Every route in `/openapi.json`, fuzzed by schemathesis against a real two-worker server.

Thousands of generated requests (valid and invalid by the schema); every response must be below 500,
have a declared status, content type, headers and body shape, and a guarded route must refuse a
request without the token. Afterwards the server is alive, logged no traceback, and its workers'
private memory grew by less than a generous bound. `EDGESIDE_FUZZ_EXAMPLES` raises the count per
operation (CI: 200).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bench.procs import edgeside
from tests.provekit import ADMIN_TOKEN, bounded, memory_kb, prove_data, worker_pids

__all__ = ["prove_data"]

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "ignored_auth",
        "unsupported_method",
    ]
)
# Private memory a worker may gain over thousands of odd requests: memos and caches are bounded, so
# anything near this is a leak, not a cache filling.
RSS_GROWTH_KB = 60_000


def schemathesis(url: str, examples: int, report: Path) -> tuple[int, str]:
    argv = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{url}/openapi.json",
        "--header",
        f"Authorization: Bearer {ADMIN_TOKEN}",
        "--checks",
        CHECKS,
        "--max-examples",
        str(examples),
        "--seed",
        "20261122",
        "--request-timeout",
        "5",
        "--workers",
        "2",
        "--report",
        "ndjson",
        "--report-dir",
        str(report),
        "--output-truncate",
        "false",
        # The snapshot push takes an application/x-tar body, which schemathesis cannot generate:
        # test_fuzz_admin_push.py sends it mutated archives instead.
        "--exclude-method",
        "PUT",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False, cwd=report)
    return out.returncode, out.stdout + out.stderr


@pytest.mark.slow
def test_schemathesis_finds_nothing_and_the_server_stays_small(
    prove_data: Path, tmp_path: Path
) -> None:
    examples = bounded("EDGESIDE_FUZZ_EXAMPLES", 200)
    with edgeside(
        prove_data, workers=2, env={"EDGESIDE_ADMIN_TOKEN": ADMIN_TOKEN}, log_dir=tmp_path
    ) as server:
        with server.client() as client:  # warm both workers' caches before the first reading
            for _ in range(200):
                client.get("/v1/edge?p=home_hero&site=shop-fr")
        workers = worker_pids(server.proc.pid)
        assert len(workers) == 2
        before = {pid: memory_kb(pid) for pid in workers}
        code, output = schemathesis(server.url, examples, tmp_path)
        time.sleep(0.3)
        after = {pid: memory_kb(pid) for pid in workers}
        alive = httpx.get(server.url + "/readyz", timeout=5).status_code
        assert worker_pids(server.proc.pid) == workers, "a worker died during the fuzz run"
        log = server.output()
    counted = re.search(r"(\d+) generated", output)
    cases = int(counted.group(1)) if counted else 0
    growth = {pid: after[pid]["RssAnon"] - before[pid]["RssAnon"] for pid in workers}
    print(f"schemathesis: {cases} cases; worker RssAnon growth kB {growth}; before {before}")
    assert code == 0, output[-6000:]
    assert cases >= 5 * examples, output[-3000:]
    assert alive == 200
    assert "Traceback" not in log, log[-4000:]
    assert max(growth.values()) < RSS_GROWTH_KB, (before, after)


def test_405_names_the_allowed_methods(prove_data: Path, tmp_path: Path) -> None:
    """RFC 9110: a 405 carries `Allow`. Found by schemathesis' unsupported_method check: neither
    the hot routes nor starlette's 405s (whose headers our error handler dropped) sent it."""
    cases = {
        "/v1/edge": {"GET"},
        "/v1/fragments/home_hero": {"GET"},
        "/v1/decide": {"POST"},
        "/v1/events": {"POST"},
        "/healthz": {"GET"},
        "/readyz": {"GET"},
        "/v1/admin/snapshots/rules": {"PUT"},
    }
    with (
        edgeside(prove_data, env={"EDGESIDE_ADMIN_TOKEN": ADMIN_TOKEN}, log_dir=tmp_path) as srv,
        srv.client() as client,
    ):
        for path, allowed in cases.items():
            for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
                if method in allowed:
                    continue
                r = client.request(method, path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
                assert r.status_code == 405, (method, path, r.status_code)
                assert r.json()["error"]["code"] == "method_not_allowed"
                allow = {m.strip() for m in r.headers.get("allow", "").split(",")}
                assert allowed <= allow, (method, path, r.headers)
