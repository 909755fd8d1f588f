"""Every construct of the expression language, evaluated through the real compiler and engine."""

from __future__ import annotations

import pytest
from rules_fakes import (
    ALICE,
    BRUNO,
    DAY,
    NOW,
    Activity,
    Profile,
    ctx,
    engine_from,
    matches,
    one_rule,
)


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ('profile.tier == "gold"', True),
        ('profile.tier != "gold"', False),
        ('profile.tier in ["gold", "platinum"]', True),
        ('profile.tier not in ["gold", "platinum"]', False),
        ("profile.ltv > 800", True),
        ("profile.ltv >= 812.5", True),
        ("profile.ltv < 812.5", False),
        ("profile.ltv <= 812.5", True),
        ("profile.ltv * 2 - 25 == 1600", True),
        ("profile.ltv / 0 == null", True),  # division by zero is null, not an error
        ("profile.birth_year % 100 == 90", True),
        ("-profile.ltv < 0", True),
        ("profile.newsletter", True),
        ("not profile.newsletter", False),
        ("profile.interests.running > 0.5", True),
        ('profile.interests["running"] > 0.5', True),
        ("profile.counters.orders >= 7", True),
        ('"newsletter" in profile.segments', True),
        ('has(profile.segments, "vip")', False),
        ('profile.segments.contains("newsletter")', True),
        ("count(profile.segments) == 1", True),
        ("count(profile.interests) == 2", True),
        ('days_since(profile.last_seen["category:shoes"]) < 7', True),
        ('days_since(profile.last_seen["category:shoes"]) > 2.5', True),
        ('profile.id == "c-alice"', True),
        ('profile.country.startswith("F")', True),
        ('profile.country.endswith("R")', True),
        ('lower(profile.country) == "fr"', True),
        ('profile.country.lower() == "fr"', True),
        ('profile.country.contains("R")', True),
        ('profile.country.matches("^F[A-Z]$")', True),
        ("true", True),
        ("false", False),
        ("1 + 2 * 3 == 7", True),
        ("(1 + 2) * 3 == 9", True),
        ('"a" + "b" == "ab"', True),
        ("not (profile.ltv > 1000) and profile.ltv > 100", True),
        ('profile.ltv > 1000 or profile.tier == "gold"', True),
    ],
)
def test_profile_expressions(when: str, expected: bool) -> None:
    assert matches(when, ALICE) is expected


@pytest.mark.parametrize(
    "when",
    [
        'profile.tier == "gold"',
        'profile.tier != "gold"',  # comparisons with null are false — `!=` too
        "profile.ltv > 0",
        "profile.ltv < 0",
        "profile.ltv + 1 > 0",  # arithmetic with null is null
        'profile.country.startswith("F")',
        'profile.tier in ["gold"]',
        'profile.tier not in ["gold"]',
        "days_since(profile.last_seen.x) > 1",
        "profile.newsletter",
        "profile.interests.running > 0",
        "segment.s",
    ],
)
def test_missing_data_is_null_and_never_matches(when: str) -> None:
    segments = '  s: profile.tier == "gold"'
    assert matches(when, None, segments) is False
    assert matches(when, Profile("x"), segments) is False


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("profile.tier == null", True),
        ("profile.tier != null", False),
        ("count(profile.tags) == 0", True),
        ("not profile.newsletter", True),
        ("not (profile.ltv > 0)", True),
    ],
)
def test_explicit_null_tests(when: str, expected: bool) -> None:
    assert matches(when, Profile("x")) is expected


@pytest.mark.parametrize(
    ("when", "kw", "expected"),
    [
        ('ctx.site == "shop-fr"', {"site": "shop-fr"}, True),
        ('ctx.locale == "fr-FR"', {"locale": "fr-FR"}, True),
        ('ctx.path.startswith("/sale")', {"path": "/sale/shoes"}, True),
        ('ctx.url.contains("utm_source=mail")', {"url": "https://x/?utm_source=mail"}, True),
        ('ctx.referrer.matches("google\\\\.")', {"referrer": "https://www.google.fr/"}, True),
        ('ctx.device == "mobile"', {"device": "mobile"}, True),
        ('ctx.weather == "rain"', {"weather": "rain"}, True),
        ('ctx.geo.country == "FR"', {"geo": {"country": "FR"}}, True),
        ('ctx.geo.region == "IDF"', {"geo": {"region": "IDF"}}, True),
        ('ctx.geo.city == "Paris"', {"geo": {"city": "Paris"}}, True),
        ("ctx.hour == 9", {"hour": 9, "weekday": 0}, True),
        ("ctx.weekday in [5, 6]", {"hour": 9, "weekday": 6}, True),
        ("ctx.consent", {"consent": True}, True),
        ("ctx.now > 0", {}, True),
        ('ctx.device == "mobile"', {}, False),  # absent context field is null
    ],
)
def test_context_expressions(when: str, kw: dict[str, object], expected: bool) -> None:
    assert matches(when, None, **kw) is expected


def test_hour_and_weekday_derive_from_now_and_timezone() -> None:
    # NOW is Thursday 2026-05-28 20:26 UTC, i.e. 22:26 in Paris (CEST) and 06:26 Friday in Tokyo.
    assert matches("ctx.hour == 20 and ctx.weekday == 3", None)
    assert matches("ctx.hour == 22", None, timezone="Europe/Paris")
    assert matches("ctx.hour == 5 and ctx.weekday == 4", None, timezone="Asia/Tokyo")
    assert matches("ctx.hour == 20", None, timezone="Not/AZone")  # unknown zone: UTC


def test_recent_activity() -> None:
    eng = engine_from(
        one_rule('"p1" in recent.views and count(recent.cart) == 2 and recent.categories.shoes > 1')
    )
    act = Activity(views=["p1"], cart=["a", "b"], categories={"shoes": 3})
    d = eng.decide(visitor_id="v", profile=None, ctx=ctx(), placements=["p"], recent=act)
    assert d.placements[0].variant == "yes"
    d = eng.decide(visitor_id="v", profile=None, ctx=ctx(), placements=["p"])
    assert d.placements[0].variant == "no"


def test_segments_compose_and_are_reported() -> None:
    segs = '  gold: profile.tier == "gold"\n  rich_gold: segment.gold and profile.ltv > 500'
    assert matches("segment.rich_gold", ALICE, segs)
    assert not matches("segment.rich_gold", BRUNO, segs)


def test_computed_map_keys() -> None:
    assert matches('profile.interests[lower("RUNNING")] > 0.5', ALICE)
    assert matches('profile.last_seen["category:" + "shoes"] > 0', ALICE)


def test_days_since_uses_request_time() -> None:
    p = Profile("x", last_seen={"k": NOW - 10 * DAY})
    assert matches("days_since(profile.last_seen.k) == 10", p)


def test_list_literals_compare_as_lists_and_test_membership_as_sets() -> None:
    p = Profile("x", {"tags": ["a", "b"], "tier": "gold"})
    assert matches('profile.tags == ["a", "b"]', p)
    assert not matches('profile.tags == ["b", "a"]', p)
    assert matches('profile.tier in ["gold", "silver"]', p)
    assert matches('has(["gold", "silver"], profile.tier)', p)
    assert matches('"a" in profile.tags and "z" not in profile.tags', p)
