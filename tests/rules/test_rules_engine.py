"""The engine: strategies, inheritance, experiments, picks, actions, explain, fail-open."""

from __future__ import annotations

import time

import msgspec
from rules_fakes import (
    ALICE,
    BRUNO,
    CHLOE,
    NOW,
    SCHEMA,
    Activity,
    Catalog,
    Item,
    Profile,
    ctx,
    demo_catalog,
    engine_from,
)

import rules

SITES = (
    SCHEMA
    + """
segments:
  gold_plus: profile.tier in ["gold", "platinum"]
  runner: profile.interests.running >= 0.5
sites:
  default:
    placements:
      hero:
        default: {variant: default, content: {ids: [b-default]}}
        ttl: 300
        rules:
          - {id: gold, when: segment.gold_plus, then: {variant: gold, ttl: 60}}
          - {id: runner, when: segment.runner, then: runner}
      side:
        strategy: score_sorted
        default: none
        rules:
          - {id: run, when: segment.runner, score: profile.interests.running * 10, then: run}
          - {id: camp, when: profile.interests.camping > 0, score: profile.interests.camping * 10,
             then: camp}
          - {id: base, when: true, score: 1, then: base}
  shop-fr:
    placements:
      hero:
        prepend:
          - {id: paris, when: ctx.geo.city == "Paris", then: paris}
    locales:
      en-FR:
        placements:
          hero:
            default: default_en
  shop-de:
    placements:
      hero:
        rules:
          - {id: only_de, when: profile.country == "DE", then: de}
"""
)


def decide(
    eng: rules.Engine, profile: Profile | None, placements: list[str], **kw: object
) -> rules.Decision:
    vid = profile.id if profile else None
    return eng.decide(visitor_id=vid, profile=profile, ctx=ctx(**kw), placements=placements)


def variants(d: rules.Decision) -> dict[str, str]:
    return {p.placement: p.variant for p in d.placements}


def test_first_match_takes_the_first_rule_that_holds() -> None:
    eng = engine_from(SITES)
    d = decide(eng, ALICE, ["hero"])
    assert d.placements[0] == rules.PlacementDecision("hero", "gold", [], "gold", None, None, None)
    assert d.segments == ["gold_plus", "runner"]
    assert d.ttl == 60
    d = decide(eng, BRUNO, ["hero"])
    assert d.placements[0].variant == "default" and d.placements[0].rule is None
    assert d.placements[0].content == ["b-default"]
    assert d.ttl == 300


def test_score_sorted_takes_the_best_score() -> None:
    eng = engine_from(SITES)
    assert variants(decide(eng, ALICE, ["side"]))["side"] == "run"  # 9 > 1
    assert variants(decide(eng, BRUNO, ["side"]))["side"] == "camp"  # 8 > 1
    assert variants(decide(eng, Profile("x"), ["side"]))["side"] == "base"


def test_site_and_locale_inheritance() -> None:
    eng = engine_from(SITES)
    paris = {"geo": {"city": "Paris"}}
    assert variants(decide(eng, ALICE, ["hero"], site="shop-fr", **paris))["hero"] == "paris"
    assert variants(decide(eng, ALICE, ["hero"], site="shop-fr"))["hero"] == "gold"
    # shop-de replaces the inherited rules; the inherited default stays.
    assert variants(decide(eng, ALICE, ["hero"], site="shop-de"))["hero"] == "default"
    assert variants(decide(eng, BRUNO, ["hero"], site="shop-de"))["hero"] == "de"
    # a locale override of one site; other locales and sites are untouched
    assert (
        variants(decide(eng, None, ["hero"], site="shop-fr", locale="en-FR"))["hero"]
        == "default_en"
    )
    assert (
        variants(decide(eng, None, ["hero"], site="shop-fr", locale="fr-FR"))["hero"] == "default"
    )
    # unknown sites get the site-wide placements
    assert variants(decide(eng, ALICE, ["hero", "side"], site="nowhere")) == {
        "hero": "gold",
        "side": "run",
    }
    assert eng.has_placement("shop-de", "side") and not eng.has_placement("shop-de", "nope")


def test_unknown_placement_is_reported_not_raised() -> None:
    d = decide(engine_from(SITES), ALICE, ["nope", "hero"])
    assert d.placements[0] == rules.PlacementDecision(
        "nope", "default", [], fallback="unknown_placement"
    )
    assert d.placements[1].variant == "gold"


def test_without_consent_no_profile_is_read() -> None:
    eng = engine_from(SITES)
    d = decide(eng, ALICE, ["hero", "side"], consent=False)
    assert variants(d) == {"hero": "default", "side": "base"}
    assert d.segments == []


def test_a_rule_raising_on_odd_data_fails_open() -> None:
    eng = engine_from(SITES)
    odd = Profile("odd", {"tier": "bronze"}, {"running": "very"})  # type: ignore[dict-item]
    d = decide(eng, odd, ["hero", "side"])
    # the segment `runner` raised (str >= float): counted, and false
    assert d.rule_errors >= 1
    assert d.placements[0].variant == "default"
    text = (
        SCHEMA
        + """
sites:
  default:
    placements:
      p:
        default: {variant: safe, content: {ids: [x1]}}
        rules:
          - {id: r, when: profile.ltv > 100, then: risky}
      q:
        default: other
"""
    )
    eng = engine_from(text)
    d = decide(eng, Profile("p", {"ltv": "lots"}), ["p", "q"])
    assert d.placements[0] == rules.PlacementDecision(
        "p", "safe", ["x1"], None, None, None, "rule_error"
    )
    assert d.placements[1].variant == "other" and d.placements[1].fallback is None
    assert d.rule_errors == 1
    assert d.ttl <= 60  # a degraded page is not cached for long


def test_deadline_falls_back_for_the_remaining_placements() -> None:
    eng = engine_from(SITES)
    past = time.monotonic() - 1
    d = eng.decide(
        visitor_id="c-alice", profile=ALICE, ctx=ctx(), placements=["hero", "side"], deadline=past
    )
    assert [p.fallback for p in d.placements] == ["deadline", "deadline"]
    assert variants(d) == {"hero": "default", "side": "none"}
    later = time.monotonic() + 10
    d = eng.decide(
        visitor_id="c-alice", profile=ALICE, ctx=ctx(), placements=["hero"], deadline=later
    )
    assert d.placements[0].fallback is None


def test_fallback_gives_every_default() -> None:
    eng = engine_from(SITES)
    d = eng.fallback(ctx(), ["hero", "side", "nope"], "no_snapshot")
    assert [(p.variant, p.fallback) for p in d.placements] == [
        ("default", "no_snapshot"),
        ("none", "no_snapshot"),
        ("default", "unknown_placement"),
    ]
    assert d.placements[0].content == ["b-default"]
    assert d.key == rules.decision_key("default", d.placements)


def test_explain_records_each_condition() -> None:
    eng = engine_from(SITES)
    d = eng.decide(visitor_id="b", profile=BRUNO, ctx=ctx(), placements=["hero"], explain=True)
    assert d.trace is not None
    rows = [(t.kind, t.id, t.matched) for t in d.trace]
    assert rows == [
        ("segment", "gold_plus", False),
        ("segment", "runner", False),
        ("rule", "gold", False),
        ("rule", "runner", False),
        ("default", None, True),
        ("content", None, True),
    ]
    assert d.trace[2].conditions == [rules.Condition("segment.gold_plus", False)]
    text = (
        SCHEMA
        + """
sites:
  default:
    placements:
      p:
        default: x
        rules:
          - id: r
            when: 'profile.ltv > 100 and not (profile.tier == "gold") and ctx.hour < 12'
            then: y
"""
    )
    d = engine_from(text).decide(
        visitor_id="a", profile=ALICE, ctx=ctx(hour=9, weekday=1), placements=["p"], explain=True
    )
    assert d.trace is not None
    assert d.trace[0].conditions == [
        rules.Condition("profile.ltv > 100", True),
        rules.Condition('profile.tier == "gold"', True),
        rules.Condition("ctx.hour < 12", True),
    ]
    assert d.trace[0].matched is False
    # the trace encodes as JSON for the admin explain endpoint
    assert b'"conditions"' in msgspec.json.encode(d)
    assert decide(engine_from(text), ALICE, ["p"]).trace is None


EXPERIMENT = (
    SITES
    + """
experiments:
  - id: hero_test
    salt: hero-1
    placement: hero
    rule: gold
    holdout: 0.2
    arms:
      - {name: control, weight: 0.5}
      - {name: big, weight: 0.5, variant: gold_big, content: {ids: [b-gold]}}
"""
)


def test_experiment_arms_change_the_variant_deterministically() -> None:
    eng = engine_from(EXPERIMENT)
    seen: dict[str, str] = {}
    for i in range(300):
        p = Profile(f"v{i}", {"tier": "gold"})
        d = eng.decide(visitor_id=p.id, profile=p, ctx=ctx(), placements=["hero"])
        pd = d.placements[0]
        assert pd.experiment == "hero_test"
        seen[pd.arm or ""] = pd.variant
        again = eng.decide(visitor_id=p.id, profile=p, ctx=ctx(), placements=["hero"])
        assert again.placements[0] == pd and again.key == d.key
    assert seen == {"control": "gold", "big": "gold_big", "holdout": "gold"}
    # the experiment only applies when its rule decided
    d = decide(eng, BRUNO, ["hero"])
    assert d.placements[0].experiment is None
    # an anonymous visitor gets the control arm
    d = eng.decide(visitor_id=None, profile=ALICE, ctx=ctx(), placements=["hero"])
    assert (d.placements[0].arm, d.placements[0].variant) == ("control", "gold")


def test_content_picks_by_tags_affinity_recency_and_exclusions() -> None:
    text = (
        SCHEMA
        + """
sites:
  default:
    placements:
      recs:
        default: {variant: popular, content: {type: product, limit: 3}}
        rules:
          - id: for_you
            when: count(profile.interests) > 0
            then:
              variant: for_you
              content: {type: product, limit: 3, rank: {affinity: 10, priority: 1},
                        exclude: [views, purchases]}
      fresh:
        default:
          variant: fresh
          content: {type: article, limit: 2, rank: [recency], exclude: []}
      budget:
        default: {variant: budget, content: {tags: [budget], type: product, limit: 5}}
      either:
        default:
          variant: either
          content: {any_tags: [climbing, fashion], type: article, limit: 5}
"""
    )
    eng = engine_from(text)
    cat = demo_catalog()
    run = ["recs", "fresh", "budget", "either"]
    d = eng.decide(visitor_id="a", profile=ALICE, ctx=ctx(), placements=run, content=cat)
    got = {p.placement: p.content for p in d.placements}
    # affinity: running items first (p-old has the top priority but expired yesterday)
    assert got["recs"] == ["p-shoe", "p-gel", "p-tent"]
    assert got["fresh"] == ["a-run", "a-style"]
    assert got["budget"] == ["p-tent", "p-gel"]
    assert got["either"] == ["a-climb", "a-style"]
    # exclusions: what the visitor saw or bought is not shown again
    act = Activity(views=["p-shoe"], purchases=["p-gel"])
    d = eng.decide(
        visitor_id="a", profile=ALICE, ctx=ctx(), placements=["recs"], content=cat, recent=act
    )
    assert d.placements[0].content == ["p-tent", "p-jacket", "p-rope"]
    # anonymous: priority only
    d = eng.decide(visitor_id=None, profile=None, ctx=ctx(), placements=["recs"], content=cat)
    assert d.placements[0].content == ["p-tent", "p-jacket", "p-shoe"]


def test_picks_use_indexes_not_a_catalogue_scan() -> None:
    items = [Item(f"x{i}", "product", ["filler"]) for i in range(5000)]
    items += [Item("hit1", "product", ["rare"], priority=2), Item("hit2", "banner", ["rare"])]
    cat = Catalog(items)
    eng = engine_from(
        SCHEMA
        + """
sites:
  default:
    placements:
      p: {default: {variant: d, content: {type: product, tags: [rare], limit: 5}}}
"""
    )
    d = eng.decide(visitor_id=None, profile=None, ctx=ctx(), placements=["p"], content=cat)
    assert d.placements[0].content == ["hit1"]
    assert cat.item_calls == 1  # only the intersection of the indexes is read


def test_locale_filter_of_picks() -> None:
    cat = Catalog(
        [
            Item("fr", "banner", ["t"], locale="fr", priority=3),
            Item("de", "banner", ["t"], locale="de-DE", priority=2),
            Item("any", "banner", ["t"], priority=1),
        ]
    )
    eng = engine_from(
        SCHEMA
        + """
sites:
  default:
    placements:
      p: {default: {variant: d, content: {tags: [t], limit: 5}}}
"""
    )
    d = eng.decide(
        visitor_id=None, profile=None, ctx=ctx(locale="fr-FR"), placements=["p"], content=cat
    )
    assert d.placements[0].content == ["fr", "any"]


def test_actions_are_ranked_and_filtered_by_site() -> None:
    text = (
        SITES
        + """
actions:
  - {id: low, when: segment.gold_plus, priority: 1}
  - id: high
    when: profile.ltv > 100
    priority: 5
    webhook: {url: "https://hooks.example.com/x", method: post}
  - {id: de_only, when: true, priority: 9, sites: [shop-de]}
  - {id: never, when: segment.runner, priority: 3}
"""
    )
    eng = engine_from(text)
    d = decide(eng, CHLOE, ["hero"])
    assert [a.id for a in d.actions] == ["high", "low"]
    assert d.actions[0].webhook == rules.Webhook("https://hooks.example.com/x", "POST")
    d = decide(eng, CHLOE, ["hero"], site="shop-de")
    assert [a.id for a in d.actions] == ["de_only", "high", "low"]


def test_decision_key_is_stable_and_discriminating() -> None:
    eng = engine_from(EXPERIMENT)
    a1 = decide(eng, ALICE, ["hero", "side"])
    a2 = eng.decide(visitor_id="c-alice", profile=ALICE, ctx=ctx(), placements=["side", "hero"])
    assert a1.key == a2.key and len(a1.key) == 16
    # another visitor with the same decisions shares the key: one cached page, not one per visitor
    twin = Profile("c-twin", dict(ALICE.attributes), dict(ALICE.interests))
    t = decide(eng, twin, ["hero", "side"])
    if [p.arm for p in t.placements] == [p.arm for p in a1.placements]:
        assert t.key == a1.key
    b = decide(eng, BRUNO, ["hero", "side"])
    assert b.key != a1.key
    # the key covers site, variant, content and arm
    base = [rules.PlacementDecision("p", "v", ["c1"], arm="a")]
    k = rules.decision_key("s", base)
    assert k == rules.decision_key(
        "s", [rules.PlacementDecision("p", "v", ["c1"], rule="other", arm="a")]
    )
    for other_site, pd in [
        ("t", base[0]),
        ("s", rules.PlacementDecision("p", "w", ["c1"], arm="a")),
        ("s", rules.PlacementDecision("p", "v", ["c2"], arm="a")),
        ("s", rules.PlacementDecision("p", "v", ["c1"], arm="b")),
        ("s", rules.PlacementDecision("p", "v", [], arm="a")),
    ]:
        assert rules.decision_key(other_site, [pd]) != k


def test_decision_key_is_the_documented_hash() -> None:
    import hashlib

    pd = [rules.PlacementDecision("hero", "gold", ["b1"], arm=None)]
    raw = msgspec.msgpack.encode(["shop-fr", [["hero", "gold", ["b1"], None]]])
    expected = hashlib.blake2b(raw, digest_size=8).hexdigest()
    assert rules.decision_key("shop-fr", pd) == expected


def test_hour_rule_and_now_default() -> None:
    text = (
        SCHEMA
        + """
sites:
  default:
    placements:
      p:
        default: day
        rules: [{id: night, when: ctx.hour >= 22 or ctx.hour < 6, then: night}]
"""
    )
    eng = engine_from(text)
    assert variants(decide(eng, None, ["p"], hour=23, weekday=0))["p"] == "night"
    assert variants(decide(eng, None, ["p"], hour=12, weekday=0))["p"] == "day"
    live = eng.decide(visitor_id=None, profile=None, ctx=rules.Context(), placements=["p"])
    assert abs(rules.Context().now - time.time()) < 5 and live.placements[0].variant in (
        "day",
        "night",
    )


def test_engine_survives_broken_protocol_objects() -> None:
    eng = engine_from(SITES)

    class Broken:
        id = "b"

        @property
        def attributes(self) -> dict[str, object]:
            raise RuntimeError("boom")

    d = eng.decide(visitor_id="b", profile=Broken(), ctx=ctx(), placements=["hero"])  # type: ignore[arg-type]
    assert d.placements[0].fallback == "internal_error" and d.rule_errors == 1


def test_inherited_placements_share_compiled_code() -> None:
    ruleset, _ = rules.load(SITES, filename="t.yaml")
    assert ruleset is not None
    eng = rules.compile_ruleset(ruleset, eager=True)
    # hero: default, shop-fr, shop-fr/en-FR, shop-de differ; side is shared by every site
    assert eng.programs_compiled == 5
    lazy = rules.compile_ruleset(ruleset, eager=False)
    assert lazy.programs_compiled == 0  # compiled on first use (tests/rules/test_rules_lazy.py)
    assert NOW > 0


def test_picks_fall_back_to_the_site_locale() -> None:
    cat = Catalog(
        [
            Item("fr", "banner", ["t"], locale="fr-FR", priority=1),
            Item("de", "banner", ["t"], locale="de-DE", priority=2),
        ]
    )
    eng = engine_from(
        SCHEMA
        + """
sites:
  default:
    placements:
      p: {default: {variant: d, content: {tags: [t], limit: 5}}}
  shop-fr:
    locale: fr-FR
"""
    )

    def ids(**kw: object) -> list[str]:
        d = eng.decide(visitor_id=None, profile=None, ctx=ctx(**kw), placements=["p"], content=cat)
        return d.placements[0].content

    assert ids(site="shop-fr") == ["fr"]
    assert ids(site="shop-fr", locale="de-DE") == ["de"]
    assert ids(site="elsewhere") == ["de", "fr"]


class CountingDict(dict[str, object]):
    """Counts reads by key: shows what a decision touches."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.reads: dict[str, int] = {}

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.reads[key] = self.reads.get(key, 0) + 1
        return super().get(key, default)


def test_segments_once_per_request_and_only_the_requested_placements() -> None:
    text = (
        SCHEMA
        + """
segments:
  gold: profile.tier == "gold"
sites:
  default:
    placements:
      a: {default: x, rules: [{id: r, when: segment.gold, then: y}]}
      b: {default: x, rules: [{id: r, when: segment.gold and profile.ltv > 1, then: y}]}
      c: {default: x, rules: [{id: r, when: profile.country == "FR", then: y}]}
"""
    )
    eng = engine_from(text)
    attrs = CountingDict({"tier": "gold", "ltv": 5.0, "country": "FR"})
    p = Profile("p", attrs)
    d = eng.decide(visitor_id="p", profile=p, ctx=ctx(), placements=["a", "b"])
    assert [x.variant for x in d.placements] == ["y", "y"]
    assert attrs.reads == {"tier": 1, "ltv": 1}  # the segment once; `c`'s rules never ran
