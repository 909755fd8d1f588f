"""`Engine.profile_fields`: the profile fields a decision can read — and every one of them, so a
profile decoded only that far gets the same decision as the whole one (the server decodes no more:
issue 15)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from rules_fakes import ALICE, BRUNO, CHLOE, SCHEMA, Profile, ctx, demo_catalog, one_rule

import rules

DEMO = Path(__file__).resolve().parents[2] / "server" / "offline" / "demo_data" / "rules.yaml"
ALWAYS = {"id", "interests"}  # experiments bucket by the id; picks rank content by interests


def engine_of(text: str) -> rules.Engine:
    ruleset, diags = rules.load(text, filename="t.yaml")
    assert ruleset is not None, rules.render_all(diags)
    return rules.compile_ruleset(ruleset)


def only(profile: Profile, fields: frozenset[str]) -> Profile:
    """The profile as a reader asked for `fields` hands it over: every other field empty."""
    return dataclasses.replace(
        profile,
        **{
            f.name: type(getattr(profile, f.name))()
            for f in dataclasses.fields(profile)
            if f.name not in fields
        },
    )


@pytest.mark.parametrize(
    ("when", "read"),
    [
        ('profile.attributes["tier"] == "gold"', {"attributes"}),
        ('profile.counters["orders"] > 3', {"counters"}),
        ('has(profile.segments, "vip")', {"segments"}),
        ('days_since(profile.last_seen["category:shoes"]) < 30', {"last_seen"}),
        ('ctx.geo.country == "FR"', set()),
    ],
)
def test_fields_read(when: str, read: set[str]) -> None:
    assert engine_of(one_rule(when)).profile_fields == ALWAYS | read


def test_segments_and_actions_count() -> None:
    text = (
        SCHEMA
        + 'segments:\n  big: profile.counters["orders"] > 10\n'
        + "sites: {default: {placements: {}}}\n"
        + 'actions:\n  - {id: a, when: \'profile.attributes["tier"] == "gold"\'}\n'
    )
    assert engine_of(text).profile_fields == ALWAYS | {"counters", "attributes"}


@pytest.mark.parametrize("profile", [ALICE, BRUNO, CHLOE], ids=lambda p: p.id)
def test_a_profile_decoded_that_far_gets_the_same_decision(profile: Profile) -> None:
    ruleset, diags = rules.load(DEMO)
    assert ruleset is not None, rules.render_all(diags)
    eng = rules.compile_ruleset(ruleset)
    catalog = demo_catalog()
    placements = ["home_hero", "home_recs", "article_sidebar", "cart_upsell"]

    def decide(p: Profile) -> tuple[object, ...]:
        d = eng.decide(
            visitor_id=p.id,
            profile=p,
            ctx=ctx(site="shop-fr"),
            placements=placements,
            content=catalog,
        )
        return (
            d.key,
            d.segments,
            [(x.placement, x.variant, x.content, x.rule) for x in d.placements],
        )

    assert decide(only(profile, eng.profile_fields)) == decide(profile)


def test_a_field_read_but_left_out_would_change_the_decision() -> None:
    # The check above can fail: leaving out a field the rules do read changes the answer.
    eng = engine_of(one_rule('profile.attributes["tier"] == "gold"'))

    def variant(p: Profile) -> str:
        return (
            eng.decide(visitor_id=p.id, profile=p, ctx=ctx(), placements=["p"])
            .placements[0]
            .variant
        )

    assert variant(only(ALICE, eng.profile_fields)) == variant(ALICE) == "yes"
    assert variant(only(ALICE, eng.profile_fields - {"attributes"})) == "no"
