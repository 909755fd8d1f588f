"""Generate the demo shop's exports (deterministic: seeded).

Run: `python server/offline/demo_data/make_demo.py`.

Vocabulary (docs/CONTRACTS.md): sites shop-fr/shop-de/shop-uk, placements home_hero, home_recs,
article_sidebar, cart_upsell; named visitors c-alice, c-bruno, c-chloe. Dates are relative to
2026-11-20, and validity windows cover 2026–2027 for most items so the demo works for a year.
"""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
BASE = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
INTERESTS = ["running", "hiking", "camping", "cycling", "climbing", "fashion", "nutrition"]
COUNTRIES = {
    "FR": ["Paris", "Lyon", "Marseille", "Lille", "Bordeaux", "Nantes"],
    "DE": ["Berlin", "München", "Hamburg", "Köln", "Frankfurt", "Leipzig"],
    "GB": ["London", "Manchester", "Bristol", "Leeds", "Edinburgh", "Cardiff"],
}
FIRST = [
    "alex",
    "marie",
    "lukas",
    "emma",
    "oliver",
    "lea",
    "noah",
    "amelia",
    "hugo",
    "mia",
    "jack",
    "sofia",
    "paul",
    "ines",
    "leon",
]
LOCALES = {"fr-FR": "FR", "de-DE": "DE", "en-GB": "GB"}
WINDOW = ("2026-01-01T00:00:00Z", "2027-12-31T23:59:59Z")


def iso(d: datetime) -> str:
    return d.strftime("%Y-%m-%dT%H:%M:%SZ")


def sha(email: str) -> str:
    return hashlib.sha256(email.encode()).hexdigest()


def person(rng: random.Random, i: int) -> dict[str, object]:
    country = rng.choice(list(COUNTRIES))
    orders = min(60, int(rng.paretovariate(1.3)) - 1)
    tier = (
        "bronze"
        if orders < 3
        else "silver"
        if orders < 8
        else "gold"
        if orders < 20
        else "platinum"
    )
    name = f"{rng.choice(FIRST)}.{i}"
    return {
        "customer_id": f"C{10000 + i}",
        "email": f"{name}@example.com",
        "cookie": f"k-{rng.getrandbits(40):010x}",
        "device_id": f"dev-{rng.getrandbits(32):08x}" if rng.random() < 0.4 else None,
        "tier": tier,
        "orders": orders,
        "country": country,
        "city": rng.choice(COUNTRIES[country]),
        "interests": {t: round(rng.uniform(0.2, 1.0), 2) for t in rng.sample(INTERESTS, 2)},
    }


NAMED: list[dict[str, Any]] = [
    {"customer_id": "C00001", "email": "alice@example.com", "cookie": "c-alice",
     "device_id": "dev-alice-phone", "tier": "gold", "orders": 14, "country": "FR",
     "city": "Paris", "interests": {"running": 0.95, "nutrition": 0.4}},
    {"customer_id": "C00002", "email": "bruno@example.com", "cookie": "c-bruno",
     "device_id": None, "tier": "bronze", "orders": 1, "country": "DE", "city": "München",
     "interests": {"camping": 0.9, "hiking": 0.5}},
    {"customer_id": "C00003", "email": "chloe@example.com", "cookie": "c-chloe",
     "device_id": "dev-chloe-tablet", "tier": "platinum", "orders": 41, "country": "GB",
     "city": "London", "interests": {"climbing": 0.9, "fashion": 0.85}},
]  # fmt: skip


def profiles(rng: random.Random) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    people: list[dict[str, Any]] = [*NAMED, *(person(rng, i) for i in range(4, 304))]
    crm: list[dict[str, object]] = []
    web: list[dict[str, object]] = []
    for n, p in enumerate(people):
        named = n < len(NAMED)
        email = sha(str(p["email"]))
        orders = int(p["orders"])
        if named or rng.random() < 0.85:  # some visitors are known only to the web analytics
            ids: dict[str, object] = {"customer_id": p["customer_id"], "email_sha256": email}
            if named or rng.random() < 0.5:
                ids["cookie"] = p["cookie"]
            segs = ["newsletter"] if named or rng.random() < 0.5 else []
            if p["tier"] in ("gold", "platinum"):
                segs.append("vip")
            if not named and rng.random() < 0.1:
                segs.append("churn_risk")
            crm.append({
                "source": "crm",
                "ids": ids,
                "updated_at": iso(BASE - timedelta(hours=rng.randrange(1, 24 * 30))),
                "attributes": {
                    "tier": p["tier"],
                    "ltv": round(orders * 64.5 + (0 if named else rng.uniform(0, 50)), 2),
                    "country": p["country"],
                    "birth_year": 1960 + (n * 7) % 45,
                    "newsletter": "newsletter" in segs,
                    "city": p["city"],
                },
                "segments": segs,
                "counters": {"orders": orders, "returns": orders // 6},
            })  # fmt: skip
        wids: dict[str, object] = {"cookie": p["cookie"]}
        if named or rng.random() < 0.6:
            wids["email_sha256"] = email  # logged-in visits link the cookie to the CRM person
        if p["device_id"]:
            wids["device_id"] = p["device_id"]
        interests = dict(p["interests"])
        web.append({
            "source": "web",
            "ids": wids,
            "updated_at": iso(BASE - timedelta(minutes=rng.randrange(5, 60 * 24 * 14))),
            "attributes": {"country": p["country"]},
            "interests": interests,
            "segments": [],
            "counters": {"orders": 0 if named else rng.randrange(0, 2)},
            "last_seen": {
                f"category:{t}": iso(BASE - timedelta(hours=rng.randrange(1, 200)))
                for t in interests
            },
        })  # fmt: skip
    # Junk the builder must not follow: a shared test address used by QA on two accounts.
    junk = sha("test@test.com")
    crm.append({"source": "crm", "ids": {"customer_id": "C99998", "email_sha256": junk},
                "updated_at": iso(BASE), "attributes": {"tier": "bronze"}})  # fmt: skip
    crm.append({"source": "crm", "ids": {"customer_id": "C99999", "email_sha256": junk},
                "updated_at": iso(BASE), "attributes": {"tier": "bronze"}})  # fmt: skip
    return crm, web


TITLES = {
    "fr-FR": {"banner": "Nouveautés {t}", "article": "Guide : bien débuter le {t}",
              "product": "{t} — équipement {n}", "offer": "-20 % sur le {t}"},
    "de-DE": {"banner": "Neu: {t}", "article": "Ratgeber: {t} für Einsteiger",
              "product": "{t} Ausrüstung {n}", "offer": "20 % Rabatt auf {t}"},
    "en-GB": {"banner": "New in {t}", "article": "A beginner's guide to {t}",
              "product": "{t} kit {n}", "offer": "20% off {t}"},
}  # fmt: skip


def content(rng: random.Random) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    cms: list[dict[str, object]] = []
    pim: list[dict[str, object]] = []
    for loc in LOCALES:
        lang = loc[:2]
        for t in ["running", "camping", "climbing", "fashion"]:
            cms.append({  # noqa: PERF401
                "uid": f"ban-{lang}-{t}", "kind": "banner", "lang": loc,
                "headline": TITLES[loc]["banner"].format(t=t), "keywords": [t],
                "slots": ["home_hero"], "html": f"<section class='hero hero-{t}'></section>",
                "live_from": WINDOW[0], "live_until": WINDOW[1],
                "published": iso(BASE - timedelta(days=rng.randrange(1, 60))),
                "weight": rng.randrange(1, 10),
            })  # fmt: skip
        cms.append({
            "uid": f"ban-{lang}-default", "kind": "banner", "lang": loc,
            "headline": TITLES[loc]["banner"].format(t="2027"), "keywords": ["default"],
            "slots": ["home_hero"], "html": "<section class='hero'></section>",
            "live_from": WINDOW[0], "live_until": WINDOW[1], "published": iso(BASE), "weight": 0,
        })  # fmt: skip
        cms.append({  # expired: a past campaign, kept so validity filtering can be seen working
            "uid": f"ban-{lang}-summer26", "kind": "banner", "lang": loc,
            "headline": TITLES[loc]["banner"].format(t="summer"), "keywords": ["hiking"],
            "slots": ["home_hero"], "html": "<section class='hero hero-summer'></section>",
            "live_from": "2026-06-01T00:00:00Z", "live_until": "2026-08-31T23:59:59Z",
            "published": "2026-05-25T09:00:00Z", "weight": 9,
        })  # fmt: skip
        for i, t in enumerate(INTERESTS):
            cms.append({
                "uid": f"art-{lang}-{t}", "kind": "article", "lang": loc,
                "headline": TITLES[loc]["article"].format(t=t), "keywords": [t],
                "sections": [t], "slots": ["article_sidebar"],
                "html": f"<article><h2>{t}</h2><p>…</p></article>",
                "live_from": WINDOW[0], "live_until": WINDOW[1],
                "published": iso(BASE - timedelta(days=2 + i * 9)), "weight": 7 - i,
            })  # fmt: skip
        for i in range(14):
            t = INTERESTS[i % len(INTERESTS)]
            cur = "GBP" if lang == "en" else "EUR"
            price = [9.9, 14.5, 19.0, 24.9, 39.0, 59.0, 79.0, 99.0, 129.0, 149.0, 189.0, 249.0,
                     12.0, 329.0][i]  # fmt: skip
            pim.append({
                "sku": f"SKU-{lang.upper()}-{i:03d}", "family": "product", "locale": loc,
                "name": TITLES[loc]["product"].format(t=t.title(), n=i), "tags": [t],
                "category": t, "price": {"amount": price, "currency": cur},
                "channels": ["home_recs", "cart_upsell"] if price < 40 else ["home_recs"],
                "available_from": WINDOW[0], "available_until": WINDOW[1],
                "created": iso(BASE - timedelta(days=(i * 11) % 90)), "rank": 10 - (i % 10),
            })  # fmt: skip
        for t in ["running", "camping", "climbing"]:
            pim.append({  # noqa: PERF401
                "sku": f"OFF-{lang.upper()}-{t}", "family": "offer", "locale": loc,
                "name": TITLES[loc]["offer"].format(t=t), "tags": [t], "category": t,
                "price": {"amount": 0, "currency": "EUR"}, "channels": ["cart_upsell"],
                "available_from": WINDOW[0], "available_until": WINDOW[1],
                "created": iso(BASE - timedelta(days=5)), "rank": 5,
                "template": "{title} – code {fields.code}", "code": f"{t.upper()[:3]}20",
            })  # fmt: skip
        pim.append({  # expired offer
            "sku": f"OFF-{lang.upper()}-blackfriday25", "family": "offer", "locale": loc,
            "name": TITLES[loc]["offer"].format(t="Black Friday 2025"), "tags": ["fashion"],
            "category": "fashion", "price": {"amount": 0, "currency": "EUR"},
            "channels": ["cart_upsell"], "available_from": "2025-11-20T00:00:00Z",
            "available_until": "2025-12-01T00:00:00Z", "created": "2025-11-15T00:00:00Z",
            "rank": 9,
        })  # fmt: skip
    return cms, pim


def write(path: Path, records: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


def main() -> None:
    rng = random.Random(20261120)
    crm, web = profiles(rng)
    write(HERE / "profiles" / "crm.ndjson", crm)
    write(HERE / "profiles" / "web.ndjson", web)
    cms, pim = content(rng)
    write(HERE / "content" / "cms.ndjson", cms)
    write(HERE / "content" / "pim.ndjson", pim)
    print(f"profiles: crm {len(crm)}, web {len(web)}; content: cms {len(cms)}, pim {len(pim)}")


if __name__ == "__main__":
    main()
