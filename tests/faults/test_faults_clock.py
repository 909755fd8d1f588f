"""Clock jumps: decisions "as of" far-away instants, and a server whose own clock jumps.

The demo banners for `home_hero` are valid from 2026-01-01 to 2027-12-31: a decision before or after
that window picks none of them, inside it picks one. Impossible clock values are bad input (422).
The second half runs the server under libfaketime and steps its wall clock years forward and back
between requests, as an NTP step or a bad RTC would (the monotonic clock never steps; it is left
alone).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.procs import edgeside
from tests.conftest import require_binary
from tests.provekit import prove_data

# In the second test stream (tests/run-streams), which balances the two.
pytestmark = pytest.mark.slow

__all__ = ["prove_data"]

FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def decide(client: httpx.Client, **context: Any) -> httpx.Response:
    return client.post(
        "/v1/decide",
        json={
            "visitor": {"ids": {"cookie": "c-alice"}},
            "context": {"site": "shop-fr", **context},
            "placements": ["home_hero", "home_recs"],
        },
    )


def hero_content(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    hero = next(p for p in response.json()["placements"] if p["placement"] == "home_hero")
    content: list[str] = hero["content"]
    return content


@pytest.fixture(scope="module")
def client(prove_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    logs = tmp_path_factory.mktemp("clock-logs")
    with edgeside(prove_data, log_dir=logs) as server, server.client() as c:
        yield c
        assert "Traceback" not in server.output()


def test_validity_windows_follow_the_requested_instant(client: httpx.Client) -> None:
    inside = hero_content(decide(client, now=epoch("2026-11-20T12:00:00")))
    before = hero_content(decide(client, now=epoch("2025-06-01T12:00:00")))
    after = hero_content(decide(client, now=epoch("2031-06-01T12:00:00")))
    assert inside and all(c.startswith("ban-") for c in inside)
    assert not any(c.startswith("ban-") for c in before + after)


@pytest.mark.parametrize("now", [0, 1, 253402300799, epoch("1999-12-31T23:59:59")])
def test_extreme_but_valid_instants_decide(client: httpx.Client, now: float) -> None:
    for tz in (None, "Pacific/Kiritimati", "Etc/GMT+12", "Mars/Olympus_Mons", "../../etc/passwd"):
        response = decide(client, now=now, timezone=tz)
        assert response.status_code == 200, (now, tz, response.text)
        assert response.json()["key"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("now", -1), ("now", 1e300), ("now", 253402300800), ("hour", 24), ("hour", -1),
     ("weekday", 7), ("weekday", -3), ("hour", 10**12)],
)  # fmt: skip
def test_impossible_clock_values_are_422_with_the_field(
    client: httpx.Client, field: str, value: float
) -> None:
    """Regression: these were accepted; `now: 1e300` decided as of 1970-01-01 00:00 UTC."""
    response = decide(client, **{field: value})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == f"$.context.{field}"


def faketime_env(stamp_file: Path) -> dict[str, str]:
    return {
        "LD_PRELOAD": FAKETIME_LIB,
        "FAKETIME_TIMESTAMP_FILE": str(stamp_file),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


def test_server_wall_clock_jumping_years_keeps_serving(prove_data: Path, tmp_path: Path) -> None:
    require_binary("faketime")
    if not os.path.exists(FAKETIME_LIB):
        pytest.skip(f"{FAKETIME_LIB} missing (apt-get install faketime)")
    stamp = tmp_path / "faketime"
    stamp.write_text("@2026-11-20 12:00:00\n")
    env = faketime_env(stamp)
    edge = "/v1/edge?p=home_hero&site=shop-fr"
    seen: dict[str, tuple[int, list[str]]] = {}
    with edgeside(prove_data, workers=2, env=env, log_dir=tmp_path) as server:
        with server.client() as c:
            for label, when in [
                ("inside", "@2026-11-20 12:00:00"),
                ("future", "@2031-06-01 12:00:00"),
                ("past", "@2025-06-01 12:00:00"),
                ("back", "@2026-11-21 12:00:00"),
            ]:
                stamp.write_text(when + "\n")
                # The memo never answers for an instant before its answer was decided, or after it
                # expired: each jump is decided afresh.
                statuses = {c.get(edge).status_code for _ in range(20)}
                hero = hero_content(decide(c))
                seen[label] = (statuses.pop() if len(statuses) == 1 else -1, hero)
            alive = c.get("/readyz").status_code
        log = server.output()
    assert alive == 200
    assert {label: status for label, (status, _) in seen.items()} == dict.fromkeys(seen, 204)
    assert seen["inside"][1] and seen["back"][1]
    assert not seen["future"][1] and not seen["past"][1]
    assert "Traceback" not in log, log[-3000:]
