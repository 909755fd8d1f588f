"""A real server for the console tests, with traffic in its decision log, and helpers.

One server per session (its own copy of the demo data: promote changes it), started with a known
admin token; `traffic` fills its decision log with page views of known and unknown visitors on
two sites and clicks on some of them, and waits until the log has them.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from bench.procs import Edgeside, edgeside
from server.offline.demo import DEMO_DIR, ensure_demo
from tests.integration.helpers import demo_cookies

TOKEN = "console-test-token-5b1f0e"
# A candidate the tests edit: the demo rules with the gold hero renamed, so known visitors'
# decisions change and anonymous ones do not.
DEMO_RULES = (DEMO_DIR / "rules.yaml").read_text(encoding="utf-8")
CANDIDATE = DEMO_RULES.replace("variant: gold_offer\n", "variant: gold_offer_v2\n")
assert CANDIDATE != DEMO_RULES


@pytest.fixture(scope="session")
def demo_built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo snapshots, built once; tests copy them before serving."""
    built = tmp_path_factory.mktemp("console-demo")
    ensure_demo(built)
    return built


@pytest.fixture(scope="session")
def console_data(demo_built: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    built = demo_built
    target = tmp_path_factory.mktemp("console-data") / "data"
    shutil.copytree(built, target, symlinks=True)
    return target


def log_decisions(logs: Path) -> int:
    return sum(p.read_bytes().count(b'"kind":"decision"') for p in logs.glob("decisions-*.ndjson"))


def make_traffic(server: Edgeside, logs: Path, rounds: int = 1) -> int:
    """Page views for every demo cookie and some strangers, clicks for a few; returns how many
    decisions the log holds once they are written."""
    before = log_decisions(logs)
    cookies = demo_cookies()[:40] + [f"stranger-{i}" for i in range(20)]
    sent = 0
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for r in range(rounds):
            for i, cookie in enumerate(cookies):
                site = "shop-fr" if i % 2 else "shop-uk"
                response = client.get(
                    f"/v1/edge?p=home_hero,home_recs&site={site}",
                    headers={"Cookie": f"edgeside_id={cookie}", "X-Original-URI": f"/r{r}/{i}"},
                )
                assert response.status_code == 204
                sent += 1
                if i % 3 == 0:
                    variant = response.headers["x-edge-decision"].split(";")[0].split("=")[1]
                    event = {
                        "type": "click",
                        "visitor": {"ids": {"cookie": cookie}},
                        "placement": "home_hero",
                        "variant": variant,
                    }
                    client.post("/v1/events", json={"events": [event]})
    deadline = time.monotonic() + 10
    while log_decisions(logs) < before + sent and time.monotonic() < deadline:
        time.sleep(0.1)
    return log_decisions(logs)


@pytest.fixture(scope="session")
def console_server(
    console_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Edgeside]:
    logs = tmp_path_factory.mktemp("console-logs")
    env = {"EDGESIDE_ADMIN_TOKEN": TOKEN}
    with edgeside(console_data, env=env, log_dir=logs) as proc:
        make_traffic(proc, console_data / "logs")
        yield proc


@contextmanager
def signed_in(server: Edgeside) -> Iterator[tuple[httpx.Client, str]]:
    """A client with a console session, and the session's CSRF token."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        response = client.post("/console/api/session", json={"token": TOKEN})
        assert response.status_code == 200, response.text
        yield client, response.json()["csrf"]
