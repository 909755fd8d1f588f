"""A realistic traffic mix for any edgeside deployment.

    locust -f bench/locustfile.py --host http://127.0.0.1:8080
    locust -f bench/locustfile.py --host URL --headless -u 50 -r 10 -t 60s

Visitors follow a Zipf-like law (few return often, many come once); a tenth send no consent; a
fifth are anonymous. Proxies call `/v1/edge` most, apps `/v1/decide`, ESI `/v1/fragments`.
Known cookies come from the demo exports; set EDGESIDE_COOKIES=path (one cookie a line) for yours.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

# locust puts this file's folder first on sys.path, where bench/snapshots.py and bench/http.py would
# shadow the `snapshots` package and the standard library's `http`: use the repository root instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from locust import FastHttpUser, between, task  # noqa: E402

from bench.http import demo_cookies  # noqa: E402

SITES = ("shop-fr", "shop-de", "shop-uk")
COUNTRIES = {"shop-fr": "FR", "shop-de": "DE", "shop-uk": "GB"}
PLACEMENT_SETS = (
    ("home_hero", "home_recs"),
    ("home_hero",),
    ("article_sidebar", "home_hero"),
    ("cart_upsell", "home_recs", "home_hero"),
)


def _cookies() -> list[str]:
    path = os.environ.get("EDGESIDE_COOKIES")
    if path:
        return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    return demo_cookies()


COOKIES = _cookies() or ["anonymous"]
# Zipf weights, computed once: visitor k is seen with probability ∝ 1/k.
WEIGHTS = [1.0 / (k + 1) for k in range(len(COOKIES))]


class Visitor(FastHttpUser):
    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        roll = random.random()
        if roll < 0.2:
            self.cookie = f"anon-{random.randrange(10**9)}"
        else:
            self.cookie = random.choices(COOKIES, WEIGHTS)[0]
        self.consent = "0" if random.random() < 0.1 else "1"
        self.site = random.choice(SITES)

    def _headers(self) -> dict[str, str]:
        return {
            "Cookie": f"edgeside_id={self.cookie}",
            "X-Consent": self.consent,
            "CF-IPCountry": COUNTRIES[self.site],
            "User-Agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) Mobile",
        }

    @task(6)
    def edge(self) -> None:
        placements = ",".join(random.choice(PLACEMENT_SETS))
        with self.client.get(
            f"/v1/edge?site={self.site}&p={placements}",
            headers=self._headers(),
            name="/v1/edge",
            catch_response=True,
        ) as response:
            if response.status_code != 204 or not response.headers.get("x-edge-key"):
                response.failure(f"edge answered {response.status_code}")

    @task(3)
    def decide(self) -> None:
        body = {
            "visitor": {"ids": {"cookie": self.cookie}},
            "context": {
                "site": self.site,
                "geo": {"country": COUNTRIES[self.site]},
                "consent": self.consent == "1",
            },
            "placements": list(random.choice(PLACEMENT_SETS)),
        }
        with self.client.post(
            "/v1/decide", json=body, name="/v1/decide", catch_response=True
        ) as response:
            if response.status_code != 200 or "key" not in (response.json() or {}):
                response.failure(f"decide answered {response.status_code}")

    @task(1)
    def fragment(self) -> None:
        self.client.get(
            f"/v1/fragments/home_recs?site={self.site}",
            headers=self._headers(),
            name="/v1/fragments/{placement}",
        )

    @task(1)
    def events(self) -> None:
        kind = random.choice(("view", "view", "click", "add_to_cart", "purchase"))
        event = {
            "type": kind,
            "visitor": {"ids": {"cookie": self.cookie}},
            "content_id": f"p-{random.randrange(200)}",
            "category": random.choice(("running", "camping", "hiking")),
            "placement": "home_recs",
        }
        with self.client.post(
            "/v1/events", json={"events": [event]}, name="/v1/events", catch_response=True
        ) as response:
            if response.status_code == 429:
                # Flood control answering a visitor at the top of the Zipf curve, as designed
                # (without this, locust counts every 4xx as a failure).
                response.success()
            elif response.status_code != 202:
                response.failure(f"events answered {response.status_code}")
