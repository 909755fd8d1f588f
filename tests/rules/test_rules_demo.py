"""The demo shop's rules check clean and drive plausible decisions for the named demo visitors."""

from __future__ import annotations

from pathlib import Path

import pytest
from rules_fakes import ALICE, BRUNO, CHLOE, Activity, demo_catalog

import rules
from rules import Context, Geo

DEMO = Path(__file__).resolve().parents[2] / "server" / "offline" / "demo_data" / "rules.yaml"
PAGE = ["home_hero", "home_recs", "article_sidebar", "cart_upsell"]
NOON = 1_780_056_000.0  # Friday 2026-05-29 12:00 UTC


@pytest.fixture(scope="module")
def engine() -> rules.Engine:
    ruleset, diags = rules.load(DEMO)
    assert ruleset is not None, rules.render_all(diags)
    assert diags == []  # clean: no errors, no warnings
    return rules.compile_ruleset(ruleset)


def page(engine: rules.Engine, profile: object, site: str, **kw: object) -> rules.Decision:
    ctx = Context(site=site, now=NOON, **kw)  # type: ignore[arg-type]
    vid = getattr(profile, "id", None)
    return engine.decide(
        visitor_id=vid,
        profile=profile,
        ctx=ctx,
        placements=PAGE,
        content=demo_catalog(),  # type: ignore[arg-type]
    )


def by_name(d: rules.Decision) -> dict[str, rules.PlacementDecision]:
    return {p.placement: p for p in d.placements}


def test_alice_gold_runner_in_france(engine: rules.Engine) -> None:
    d = page(engine, ALICE, "shop-fr", locale="fr-FR", geo=Geo(country="FR", city="Lyon"))
    p = by_name(d)
    assert p["home_hero"].rule == "gold_offer"
    assert p["home_hero"].variant in ("gold_offer", "gold_offer_big")
    assert p["home_hero"].content == ["b-run"]  # the hero banner nearest her interests
    assert p["home_hero"].experiment == "hero_gold_2026"
    assert p["home_recs"].variant == "for_you" and p["home_recs"].content[0] == "p-shoe"
    assert p["article_sidebar"].variant == "running_guide" and p["article_sidebar"].content == [
        "a-run"
    ]
    assert "gold_plus" in d.segments and "runner" in d.segments
    # something in the cart: the offer that matches her interests
    d = engine.decide(
        visitor_id="c-alice",
        profile=ALICE,
        ctx=Context(site="shop-fr", now=NOON),
        placements=["cart_upsell"],
        content=demo_catalog(),
        recent=Activity(cart=["p-gel"]),
    )
    assert (d.placements[0].variant, d.placements[0].content) == ("offer", ["o-run"])
    # in Paris, shop-fr's own rule comes first
    d = page(engine, ALICE, "shop-fr", geo=Geo(city="Paris"))
    assert by_name(d)["home_hero"].variant == "paris_marathon"


def test_bruno_bronze_camper_in_germany(engine: rules.Engine) -> None:
    d = page(engine, BRUNO, "shop-de", locale="de-DE")
    p = by_name(d)
    assert p["home_hero"].variant == "outdoor_hero" and p["home_hero"].content == ["b-camp"]
    assert p["article_sidebar"].variant == "trail_guide"
    assert "bargain_hunter" in d.segments and "at_risk" in d.segments
    assert [a.id for a in d.actions] == ["newsletter_signup"]  # at risk, but no newsletter opt-in
    # Germany's own cart rule: returners get no upsell
    ctx = Context(site="shop-de", now=NOON)
    d = engine.decide(
        visitor_id="c-bruno",
        profile=BRUNO,
        ctx=ctx,
        placements=["cart_upsell"],
        content=demo_catalog(),
        recent=Activity(cart=["p-tent"]),
    )
    assert d.placements[0].rule == "no_upsell_returners"


def test_chloe_platinum_climber_in_the_uk(engine: rules.Engine) -> None:
    d = page(engine, CHLOE, "shop-uk", locale="en-GB")
    p = by_name(d)
    assert p["home_hero"].rule == "gold_offer"
    assert p["article_sidebar"].variant == "climbing_guide"
    assert [a.id for a in d.actions] == ["vip_callback"]
    assert d.actions[0].webhook is not None and d.actions[0].webhook.url.startswith("https://")
    d = engine.decide(
        visitor_id="c-chloe",
        profile=CHLOE,
        ctx=Context(site="shop-uk", now=NOON),
        placements=["cart_upsell"],
        content=demo_catalog(),
        recent=Activity(cart=["p-rope"]),
    )
    assert d.placements[0].variant == "premium_upsell" and d.placements[0].content == ["p-shoe"]


def test_without_consent_the_default_hero(engine: rules.Engine) -> None:
    d = page(engine, ALICE, "shop-fr", consent=False)
    p = by_name(d)
    assert p["home_hero"].variant == "default" and p["home_hero"].rule is None
    assert d.segments == [] and d.actions == []


def test_anonymous_visitors_share_a_handful_of_keys(engine: rules.Engine) -> None:
    keys = {page(engine, None, site).key for site in ("shop-fr", "shop-de", "shop-uk")}
    assert len(keys) == 3
    assert page(engine, None, "shop-fr").key == page(engine, None, "shop-fr").key


def test_night_hero(engine: rules.Engine) -> None:
    d = engine.decide(
        visitor_id=None,
        profile=None,
        ctx=Context(site="shop-uk", hour=23, weekday=4),
        placements=["home_hero"],
        content=demo_catalog(),
    )
    assert d.placements[0].variant == "night_sale" and d.placements[0].content == ["b-default"]


def test_welsh_locale_override(engine: rules.Engine) -> None:
    d = engine.decide(
        visitor_id=None,
        profile=None,
        ctx=Context(site="shop-uk", locale="cy-GB", now=NOON),
        placements=["home_hero"],
    )
    assert d.placements[0].variant == "default_cy"


def test_demo_declares_every_feature() -> None:
    ruleset, _ = rules.load(DEMO)
    assert ruleset is not None
    placements = {n: p for per in ruleset.table.values() for n, p in per.items()}
    assert {p.strategy for p in placements.values()} == {"first_match", "score_sorted"}
    assert ruleset.experiments[0].holdout > 0
    assert any(a.webhook_url for a in ruleset.actions)
    assert any(r.id == "paris_runner" for r in ruleset.table[("shop-fr", None)]["home_hero"].rules)
    assert set(ruleset.sites) == {"default", "shop-fr", "shop-de", "shop-uk"}
    assert set(ruleset.placement_names()) == set(PAGE)
