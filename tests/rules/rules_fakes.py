"""Small in-memory data for the rules tests: plain dataclasses that satisfy rules.interfaces.

They are data, not mocks: the engine reads them exactly as it reads snapshot structs.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import rules
from rules import Context, Engine, Geo

NOW = 1_780_000_000.0  # 2026-05-28, a Thursday, 20:26 UTC
DAY = 86400.0


@dataclass
class Profile:
    id: str
    attributes: dict[str, object] = field(default_factory=dict)
    interests: dict[str, float] = field(default_factory=dict)
    segments: list[str] = field(default_factory=list)
    counters: dict[str, float] = field(default_factory=dict)
    last_seen: dict[str, float] = field(default_factory=dict)


@dataclass
class Item:
    id: str
    type: str
    tags: list[str] = field(default_factory=list)
    locale: str | None = None
    placements: list[str] = field(default_factory=list)
    valid_from: float | None = None
    valid_to: float | None = None
    published_at: float | None = None
    priority: float = 0.0


class Catalog:
    """Indexes built once, like the content snapshot's; counts look-ups so tests can see them."""

    def __init__(self, items: list[Item]) -> None:
        self.items = {i.id: i for i in items}
        index: dict[tuple[str, str], set[str]] = defaultdict(set)
        for i in items:
            index[("type", i.type)].add(i.id)
            for t in i.tags:
                index[("tag", t)].add(i.id)
            for p in i.placements:
                index[("placement", p)].add(i.id)
            if i.locale:
                index[("locale", i.locale)].add(i.id)
        self.index = {k: frozenset(v) for k, v in index.items()}
        self.item_calls = 0

    def ids(self, field: str, value: str) -> frozenset[str]:
        return self.index.get((field, value), frozenset())

    def item(self, id: str) -> Item | None:
        self.item_calls += 1
        return self.items.get(id)


@dataclass
class Activity:
    views: list[str] = field(default_factory=list)
    purchases: list[str] = field(default_factory=list)
    cart: list[str] = field(default_factory=list)
    categories: dict[str, float] = field(default_factory=dict)


ALICE = Profile(
    "c-alice",
    {"tier": "gold", "ltv": 812.5, "country": "FR", "birth_year": 1990, "newsletter": True},
    {"running": 0.9, "outdoor": 0.4},
    ["newsletter"],
    {"orders": 7},
    {"category:shoes": NOW - 3 * DAY},
)
BRUNO = Profile(
    "c-bruno",
    {"tier": "bronze", "ltv": 120.0, "country": "DE", "newsletter": False},
    {"camping": 0.8},
    [],
    {"orders": 1, "returns": 4},
    {"category:shoes": NOW - 200 * DAY},
)
CHLOE = Profile(
    "c-chloe",
    {"tier": "platinum", "ltv": 5400.0, "country": "GB", "newsletter": True},
    {"climbing": 0.9, "fashion": 0.7},
    ["newsletter", "vip"],
    {"orders": 31},
    {},
)


def demo_catalog() -> Catalog:
    """Shaped like the demo content snapshot: banners tagged with an interest or `default`,
    products tagged `budget`/`premium` by price, offers per interest, each with its placements."""
    hero, recs, cart = ["home_hero"], ["home_recs"], ["cart_upsell"]
    return Catalog(
        [
            Item("b-default", "banner", ["default"], placements=hero, priority=0),
            Item("b-run", "banner", ["running"], placements=hero, priority=3),
            Item("b-camp", "banner", ["camping"], placements=hero, priority=6),
            Item("b-climb", "banner", ["climbing"], placements=hero, priority=8),
            Item("b-fashion", "banner", ["fashion"], placements=hero, priority=8),
            Item("b-summer", "banner", ["hiking"], placements=hero, priority=9, valid_to=NOW - DAY),
            Item(
                "p-shoe",
                "product",
                ["running", "premium"],
                placements=recs,
                priority=2,
                published_at=NOW - 2 * DAY,
            ),
            Item(
                "p-tent",
                "product",
                ["camping", "budget"],
                placements=recs + cart,
                priority=3,
                published_at=NOW - 40 * DAY,
            ),
            Item(
                "p-rope",
                "product",
                ["climbing", "premium"],
                placements=recs,
                priority=1,
                published_at=NOW - 1 * DAY,
            ),
            Item(
                "p-jacket",
                "product",
                ["fashion"],
                placements=recs,
                priority=2,
                published_at=NOW - 9 * DAY,
            ),
            Item(
                "p-gel",
                "product",
                ["nutrition", "running", "budget"],
                placements=recs + cart,
                priority=1,
            ),
            Item("p-old", "product", ["running"], placements=recs, priority=9, valid_to=NOW - DAY),
            Item("a-run", "article", ["running", "fresh"], published_at=NOW - DAY),
            Item("a-climb", "article", ["climbing"], published_at=NOW - 5 * DAY),
            Item("a-style", "article", ["fashion", "fresh"], published_at=NOW - 2 * DAY),
            Item("a-news", "article", ["fresh"], published_at=NOW - 3 * DAY),
            Item("o-run", "offer", ["running"], placements=cart, priority=5),
            Item("o-camp", "offer", ["camping"], placements=cart, priority=5),
            Item("o-climb", "offer", ["climbing"], placements=cart, priority=5),
        ]
    )


def ctx(**kw: object) -> Context:
    kw.setdefault("now", NOW)
    geo = kw.pop("geo", None)
    c = Context(**kw)  # type: ignore[arg-type]
    if isinstance(geo, dict):
        c.geo = Geo(**geo)
    return c


def engine_from(text: str, filename: str = "t.yaml") -> Engine:
    ruleset, diags = rules.load(text, filename=filename)
    errors = [rules.render(d) for d in diags if d.severity == "error"]
    if ruleset is None:
        raise AssertionError("rules did not check:\n" + "\n".join(errors))
    return rules.compile_ruleset(ruleset)


def diagnostics(text: str, filename: str = "t.yaml") -> list[rules.Diagnostic]:
    return rules.load(text, filename=filename)[1]


SCHEMA = """
schema:
  attributes:
    tier: {type: string, values: [bronze, silver, gold, platinum]}
    ltv: number
    country: string
    birth_year: int
    newsletter: bool
    tags: list
  interests: [running, camping, climbing, fashion, outdoor]
  counters: [orders, returns]
"""


def one_rule(when: str, segments: str = "") -> str:
    """A file with one placement whose single rule has the given condition."""
    seg = f"segments:\n{segments}\n" if segments else ""
    return (
        SCHEMA
        + seg
        + f"""
sites:
  default:
    placements:
      p:
        default: no
        rules:
          - id: r
            when: '{when}'
            then: yes
"""
    )


def matches(
    when: str, profile: Profile | None = None, segments: str = "", **ctx_kw: object
) -> bool:
    """Whether the rule `when` matches for the profile and context."""
    eng = engine_from(one_rule(when.replace("'", "''"), segments))
    d = eng.decide(visitor_id="v", profile=profile, ctx=ctx(**ctx_kw), placements=["p"])
    assert d.rule_errors == 0, d
    return d.placements[0].variant == "yes"
