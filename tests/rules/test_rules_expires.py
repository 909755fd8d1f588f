"""`Decision.expires`: until when the same inputs give the same decision — exact bounds for each
source of time dependence, and a property check that nothing changes before the bound."""

from __future__ import annotations

import dis
import math
import operator
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rules_fakes import (
    ALICE,
    BRUNO,
    CHLOE,
    DAY,
    NOW,
    SCHEMA,
    Activity,
    Catalog,
    Item,
    Profile,
    ctx,
    demo_catalog,
    engine_from,
    one_rule,
)

import rules
from rules import expiry
from rules.compiler import (
    ARGS,
    CLOCK_FREE_HELPERS,
    HELPERS,
    Shared,
    _since_ge,
    _since_gt,
    _since_le,
    _since_lt,
    code_objects,
)
from rules.context import Context, Geo, clock, clock_until
from rules.picks import RECENCY_BUCKET_S

QUARTER = 900.0
NEXT_QUARTER = (NOW // QUARTER + 1) * QUARTER  # NOW is 20:26:40 UTC: 20:30:00
DEMO = Path(__file__).resolve().parents[2] / "server" / "offline" / "demo_data" / "rules.yaml"


def decide_one(when: str, profile: Profile | None = ALICE, **kw: object) -> rules.Decision:
    eng = engine_from(one_rule(when.replace("'", "''")))
    recent = kw.pop("recent", None)
    return eng.decide(
        visitor_id="v",
        profile=profile,
        ctx=ctx(**kw),
        placements=["p"],
        recent=recent,  # type: ignore[arg-type]
    )


def same(a: rules.Decision, b: rules.Decision) -> bool:
    return (a.placements, a.segments, a.actions, a.key) == (
        b.placements,
        b.segments,
        b.actions,
        b.key,
    )


# -- compiled functions -----------------------------------------------------------------------


def test_rules_that_ignore_the_clock_never_expire() -> None:
    d = decide_one('profile.tier == "gold" and ctx.geo.country == "FR"', geo={"country": "FR"})
    assert d.placements[0].variant == "yes" and d.expires == math.inf
    # last_seen alone is data, not the clock
    assert decide_one('profile.last_seen["category:shoes"] > 0').expires == math.inf


def test_a_rule_on_the_hour_expires_at_the_next_quarter_hour() -> None:
    assert NEXT_QUARTER - NOW == 200.0
    d = decide_one("ctx.hour >= 20")
    assert d.placements[0].variant == "yes" and d.expires == NEXT_QUARTER
    assert decide_one("ctx.weekday == 3").expires == NEXT_QUARTER
    # a half-hour zone changes its hour on a UTC quarter hour too
    assert decide_one("ctx.hour == 1", timezone="Asia/Kolkata").expires == NEXT_QUARTER


def test_the_hour_rule_changes_exactly_at_expires() -> None:
    eng = engine_from(one_rule("ctx.hour >= 21"))
    t = NOW + 33 * 60 + 20 - 0.5  # 20:59:59.5 UTC
    d = eng.decide(visitor_id="v", profile=None, ctx=ctx(now=t), placements=["p"])
    assert d.placements[0].variant == "no" and d.expires == t + 0.5
    later = eng.decide(visitor_id="v", profile=None, ctx=ctx(now=d.expires), placements=["p"])
    assert later.placements[0].variant == "yes"


def test_an_hour_given_by_the_caller_does_not_expire() -> None:
    assert decide_one("ctx.hour >= 20", hour=21, weekday=3).expires == math.inf
    assert decide_one("ctx.hour >= 20", hour=21).expires == math.inf  # weekday unread
    # the weekday still follows the clock when only the hour was given
    assert decide_one("ctx.weekday == 3 and ctx.hour > 1", hour=21).expires == NEXT_QUARTER


def test_a_segment_reading_now_expires_within_a_second_even_when_unused() -> None:
    seg = '  lapsed: days_since(profile.last_seen["category:shoes"]) * 2 > 180'
    eng = engine_from(one_rule('profile.tier == "gold"', segments=seg))
    d = eng.decide(visitor_id="v", profile=BRUNO, ctx=ctx(), placements=["p"])
    assert d.segments == ["lapsed"] and d.expires == NOW + 1.0
    assert decide_one("ctx.now > 0").expires == NOW + 1.0


def test_actions_count_but_not_without_consent() -> None:
    text = one_rule("true") + "actions:\n  - {id: night, when: ctx.hour > 20, priority: 1}\n"
    eng = engine_from(text)
    d = eng.decide(visitor_id="v", profile=ALICE, ctx=ctx(now=NOW + 3600), placements=["p"])
    assert [a.id for a in d.actions] == ["night"] and d.expires == NEXT_QUARTER + 3600
    d = eng.decide(visitor_id="v", profile=None, ctx=ctx(consent=False), placements=["p"])
    assert d.expires == math.inf


def test_recent_activity_counts_only_when_given() -> None:
    when = "count(recent.cart) > 0"
    assert decide_one(when).expires == math.inf
    d = decide_one(when, recent=Activity(cart=["p-gel"]))
    assert d.placements[0].variant == "yes" and d.expires == NOW + 1.0
    assert decide_one(when, recent=Activity()).expires == NOW + 1.0
    # without consent no live activity is used
    assert decide_one(when, recent=Activity(cart=["x"]), consent=False).expires == math.inf


def test_unknown_placements_deadlines_errors_and_fallbacks() -> None:
    eng = engine_from(one_rule("ctx.hour > 3"))
    d = eng.decide(visitor_id="v", profile=None, ctx=ctx(hour=5), placements=["nope"])
    assert d.expires == math.inf
    d = eng.decide(
        visitor_id="v",
        profile=None,
        ctx=ctx(hour=5),
        placements=["p"],
        deadline=time.monotonic() - 1.0,
    )
    assert d.placements[0].fallback == "deadline" and d.expires == NOW + 1.0
    assert eng.fallback(ctx(), ["p"], "no_snapshot").expires == NOW + 1.0
    # a rule error (a number where a string was declared) falls back for a second only
    eng = engine_from(one_rule('profile.tier.startswith("g")'))
    d = eng.decide(visitor_id="v", profile=Profile("x", {"tier": 3}), ctx=ctx(), placements=["p"])
    assert d.rule_errors == 1 and d.expires == NOW + 1.0


# -- days_since compared with a number: the comparison's own edge ------------------------------

SHOES = 'profile.last_seen["category:shoes"]'
EPS = 1e-3  # the edge is recorded a hair early (≈ 25 µs at today's epoch times), never late


def seen(days_ago: float, key: str = "category:shoes") -> Profile:
    return Profile("c-seen", {"tier": "gold"}, last_seen={key: NOW - days_ago * DAY})


def lapsed_engine(cmp: str) -> rules.Engine:
    """A segment `lapsed` with the comparison, and a placement whose variant follows it."""
    seg = f"  lapsed: '{cmp}'"
    return engine_from(one_rule("segment.lapsed", segments=seg))


def lapsed_at(eng: rules.Engine, profile: Profile | None, t: float) -> rules.Decision:
    return eng.decide(visitor_id="v", profile=profile, ctx=ctx(now=t), placements=["p"])


def test_anonymous_visitors_of_the_demo_no_longer_expire_in_a_second() -> None:
    eng = engine_from(DEMO.read_text(), filename="demo.yaml")
    d = eng.decide(visitor_id=None, profile=None, ctx=ctx(), placements=["home_hero"])
    assert d.expires == NEXT_QUARTER  # night_owl reads ctx.hour; at_risk no longer costs anything
    d = eng.decide(visitor_id=None, profile=None, ctx=ctx(hour=14), placements=["home_hero"])
    assert d.expires == math.inf
    d = eng.decide(visitor_id=None, profile=None, ctx=ctx(), placements=["article_sidebar"])
    assert d.expires == math.inf


def test_demo_profiles_expire_at_their_at_risk_edge_or_never() -> None:
    eng = engine_from(DEMO.read_text(), filename="demo.yaml")
    page = ["home_recs", "article_sidebar"]  # neither reads the clock (no catalogue: no picks)
    d = eng.decide(visitor_id="a", profile=ALICE, ctx=ctx(), placements=page)
    # last seen 3 days ago: at_risk (and the winback action) turns on 90 days after that
    edge = ALICE.last_seen["category:shoes"] + 90 * DAY
    assert "at_risk" not in d.segments and edge - EPS < d.expires <= edge
    d = eng.decide(visitor_id="b", profile=BRUNO, ctx=ctx(), placements=page)
    assert "at_risk" in d.segments and d.expires == math.inf  # 200 days: already past the edge
    d = eng.decide(visitor_id="c", profile=CHLOE, ctx=ctx(), placements=page)
    assert d.expires == math.inf  # never seen: days_since(null) is null whatever the time


def test_a_greater_than_expires_at_its_edge_and_flips_right_after() -> None:
    eng = lapsed_engine(f"days_since({SHOES}) > 90")
    p = seen(10)
    d = lapsed_at(eng, p, NOW)
    edge = p.last_seen["category:shoes"] + 90 * DAY
    assert d.placements[0].variant == "no" and edge - EPS < d.expires <= edge
    # nothing changes up to the bound, the variant does just after the edge…
    for t in (NOW + 40 * DAY, math.nextafter(d.expires, -math.inf), d.expires, edge):
        assert same(lapsed_at(eng, p, t), d)
    after = lapsed_at(eng, p, edge + EPS)
    assert after.placements[0].variant == "yes" and after.segments == ["lapsed"]
    # …and once past the edge the comparison can never change back: no bound from it
    assert after.expires == math.inf
    assert lapsed_at(eng, seen(200), NOW).expires == math.inf


def test_the_edge_is_the_first_instant_the_answer_changes_within_epsilon() -> None:
    # at NOW the profile is 5 s short of the edge: the rule flips 5 s later, not a second later
    p = Profile("c-edge", last_seen={"category:shoes": NOW - 90 * DAY + 5.0})
    eng = lapsed_engine(f"days_since({SHOES}) >= 90")
    d = lapsed_at(eng, p, NOW)
    assert d.placements[0].variant == "no" and NOW + 5.0 - EPS < d.expires <= NOW + 5.0
    assert lapsed_at(eng, p, math.nextafter(d.expires, -math.inf)).placements[0].variant == "no"
    assert lapsed_at(eng, p, NOW + 5.0).placements[0].variant == "yes"


def test_less_than_expires_at_its_edge_too() -> None:
    eng = lapsed_engine(f"days_since({SHOES}) < 30")
    p = seen(10)
    d = lapsed_at(eng, p, NOW)
    edge = p.last_seen["category:shoes"] + 30 * DAY
    assert d.placements[0].variant == "yes" and edge - EPS < d.expires <= edge
    assert same(lapsed_at(eng, p, math.nextafter(d.expires, -math.inf)), d)
    after = lapsed_at(eng, p, edge + EPS)
    assert after.placements[0].variant == "no" and after.expires == math.inf


@pytest.mark.parametrize(
    ("cmp", "days", "variant", "edge_days"),
    [
        (f"90 < days_since({SHOES})", 10, "no", 90),
        (f"90 <= days_since({SHOES})", 10, "no", 90),
        (f"30 > days_since({SHOES})", 10, "yes", 30),
        (f"30 >= days_since({SHOES})", 10, "yes", 30),
        (f"days_since({SHOES}) <= 30", 10, "yes", 30),
        (f"days_since({SHOES}) > 2 * 45", 10, "no", 90),  # folded constant
        (f"days_since({SHOES}) > -1", 0.5, "yes", None),  # past the edge
        (f"days_since({SHOES}) < 0.25", 0.5, "no", None),
        (f"not (days_since({SHOES}) > 90)", 10, "yes", 90),
    ],
)
def test_either_operand_order_and_direction(
    cmp: str, days: float, variant: str, edge_days: float | None
) -> None:
    eng = lapsed_engine(cmp)
    p = seen(days)
    d = lapsed_at(eng, p, NOW)
    assert d.placements[0].variant == variant
    if edge_days is None:
        assert d.expires == math.inf
        return
    edge = p.last_seen["category:shoes"] + edge_days * DAY
    assert edge - EPS < d.expires <= edge
    assert same(lapsed_at(eng, p, math.nextafter(d.expires, -math.inf)), d)
    assert not same(lapsed_at(eng, p, edge + EPS), d)


@pytest.mark.parametrize(
    "cmp",
    [
        f"days_since({SHOES}) * 2 > 3",  # arithmetic
        f"days_since({SHOES}) - 1 > 3",
        f"days_since({SHOES}) > profile.ltv",  # compared with data
        f"days_since({SHOES}) == 10",  # equality: left to the one-second rule
        f"days_since({SHOES}) != 10",
        "days_since(ctx.now - 100) > 1",  # t read from the clock itself
        f"ctx.now > 0 or days_since({SHOES}) > 90",
    ],
)
def test_other_uses_of_the_clock_keep_the_one_second_rule(cmp: str) -> None:
    d = lapsed_at(lapsed_engine(cmp), seen(10), NOW)
    assert d.rule_errors == 0 and d.expires == NOW + 1.0


def test_a_null_time_never_expires() -> None:
    eng = lapsed_engine(f"days_since({SHOES}) > 90")
    for profile in (None, seen(10, key="category:tents"), Profile("c-empty")):
        d = lapsed_at(eng, profile, NOW)
        assert d.placements[0].variant == "no" and d.expires == math.inf
    # without consent no profile is read
    d = eng.decide(visitor_id="v", profile=seen(10), ctx=ctx(consent=False), placements=["p"])
    assert d.expires == math.inf


def test_short_circuit_skips_a_comparison_only_behind_what_decides() -> None:
    # gold: the comparison is not evaluated and the result cannot change (tier is data)
    eng = lapsed_engine(f'profile.tier == "gold" or days_since({SHOES}) > 90')
    assert lapsed_at(eng, seen(10), NOW).expires == math.inf
    eng = lapsed_engine(f'profile.tier == "silver" or days_since({SHOES}) > 90')
    edge = NOW + 80 * DAY
    assert edge - EPS < lapsed_at(eng, seen(10), NOW).expires <= edge
    # an hour that is true now can turn false: its own bound (the quarter hour) applies
    eng = lapsed_engine(f"ctx.hour >= 20 or days_since({SHOES}) > 90")
    assert lapsed_at(eng, seen(10), NOW).expires == NEXT_QUARTER
    # two comparisons: the earlier edge wins
    eng = lapsed_engine(f"days_since({SHOES}) > 90 or days_since({SHOES}) > 20")
    edge = NOW + 10 * DAY
    assert edge - EPS < lapsed_at(eng, seen(10), NOW).expires <= edge


def test_placements_and_actions_add_their_edges_only_when_they_run() -> None:
    text = (
        one_rule(f"days_since({SHOES}) > 30".replace("'", "''"))
        + f"actions:\n  - {{id: a, when: 'days_since({SHOES}) > 20', priority: 1}}\n"
    )
    eng = engine_from(text)
    p = seen(10)
    d = eng.decide(visitor_id="v", profile=p, ctx=ctx(), placements=["p"])
    assert NOW + 10 * DAY - EPS < d.expires <= NOW + 10 * DAY  # the action's edge
    d = eng.decide(visitor_id="v", profile=p, ctx=ctx(), placements=[])
    assert NOW + 10 * DAY - EPS < d.expires <= NOW + 10 * DAY
    # no consent: no profile and no actions; a placement not asked for adds nothing
    d = eng.decide(visitor_id="v", profile=p, ctx=ctx(consent=False), placements=["p"])
    assert d.expires == math.inf
    eng = engine_from(one_rule(f"days_since({SHOES}) > 30".replace("'", "''")))
    assert eng.decide(visitor_id="v", profile=p, ctx=ctx(), placements=[]).expires == math.inf


def test_explain_gives_the_same_expiry_and_the_comparison_values() -> None:
    # explain evaluates every condition, short-circuited ones too: not a reason to expire earlier
    eng = lapsed_engine(f'profile.tier == "gold" or days_since({SHOES}) > 90')
    plain = lapsed_at(eng, seen(10), NOW)
    d = eng.decide(visitor_id="v", profile=seen(10), ctx=ctx(), placements=["p"], explain=True)
    assert d.expires == plain.expires == math.inf and d.trace is not None
    eng = engine_from(one_rule(f'profile.tier == "gold" or days_since({SHOES}) > 90'))
    d = eng.decide(visitor_id="v", profile=seen(10), ctx=ctx(), placements=["p"], explain=True)
    assert d.placements[0].variant == "yes" and d.expires == math.inf and d.trace is not None
    [rule] = [e for e in d.trace if e.kind == "rule"]
    assert [c.value for c in rule.conditions] == [True, False]


def test_the_edge_is_never_late_and_hardly_early() -> None:
    """The recorded edge against the first float instant at which the comparison really flips."""

    def first_flip(pred: object, now: float) -> float:
        # smallest float x > now with pred(x) != pred(now), by bisection on floats
        assert callable(pred)
        start = pred(now)
        lo, hi = now, now + 1.0
        while pred(hi) == start:
            hi = now + (hi - now) * 2
        while math.nextafter(lo, math.inf) < hi:
            mid = lo + (hi - lo) / 2
            if mid <= lo or mid >= hi:
                mid = math.nextafter(lo, math.inf)
            lo, hi = (lo, mid) if pred(mid) != start else (mid, hi)
        return hi

    rng = random.Random(5)
    helpers = [
        (_since_gt, operator.gt),
        (_since_ge, operator.ge),
        (_since_lt, operator.lt),
        (_since_le, operator.le),
    ]
    for _ in range(5000):
        fn, op = rng.choice(helpers)
        now = rng.uniform(1e9, 2e9)
        c: float = rng.choice(
            [
                90,
                0,
                1,
                1 / 3,
                7.3,
                rng.uniform(-5, 400),
                rng.uniform(0, 1e6),
                round(rng.uniform(0, 100), 2),
            ]
        )
        # t puts the edge within microseconds to days of now, sometimes within float rounding
        offset = rng.choice([rng.uniform(0, 5 * DAY), rng.uniform(0, 1e-4), 2.0**-20, 1e-7, 0.0])
        t = now - c * DAY + offset
        cell = [math.inf, now]
        answer = fn(cell, t, c)
        assert answer is op((now - t) / 86400.0, c)  # exactly the inline comparison
        flips_later = answer == (op in (operator.lt, operator.le))  # it can still change
        if not flips_later:
            assert cell[0] == math.inf
            continue

        def pred(x: float, fn: object = fn, t: float = t, c: float = c) -> bool:
            return bool(fn([math.inf, x], t, c))  # type: ignore[operator]

        flip = first_flip(pred, now)
        assert now < cell[0] <= flip, (op, now, t, c, cell[0], flip)
        # early by the rounding margin only: ≈ 25 µs for today's times and constants
        early = 2.0**-45 * (abs(t) + abs(c) * DAY)
        assert cell[0] >= flip - early or cell[0] == math.nextafter(now, math.inf)


# -- content picks ----------------------------------------------------------------------------

PICKS = (
    SCHEMA
    + """
sites:
  default:
    placements:
      p:
        default: {variant: d, content: {type: banner, limit: 1, rank: [priority], exclude: []}}
      fixed:
        default: {variant: d, content: {ids: [x-late, x-early]}}
      fresh:
        default: {variant: d, content: {type: article, limit: 1, rank: [recency], exclude: []}}
      unseen:
        default: {variant: d, content: {type: banner, limit: 1, rank: [priority], exclude: [views]}}
"""
)


def picks_decide(
    catalog: Catalog, name: str, now: float, recent: Activity | None = None
) -> rules.Decision:
    eng = engine_from(PICKS)
    return eng.decide(
        visitor_id="v",
        profile=None,
        ctx=ctx(now=now),
        placements=[name],
        content=catalog,
        recent=recent,
    )


def test_validity_windows_expire_at_the_next_boundary() -> None:
    catalog = Catalog(
        [
            Item("b-base", "banner", priority=1),
            Item("b-soon", "banner", priority=5, valid_from=NOW + 100),
            Item("b-ending", "banner", priority=3, valid_to=NOW + 50),
            Item("b-gone", "banner", priority=9, valid_to=NOW - 10),
        ]
    )
    d = picks_decide(catalog, "p", NOW)
    assert d.placements[0].content == ["b-ending"] and d.expires == NOW + 50
    assert picks_decide(catalog, "p", NOW + 50).placements[0].content == ["b-base"]
    d = picks_decide(catalog, "p", NOW + 60)
    assert d.placements[0].content == ["b-base"] and d.expires == NOW + 100
    d = picks_decide(catalog, "p", NOW + 100)
    assert d.placements[0].content == ["b-soon"] and d.expires == math.inf


def test_validity_of_listed_ids() -> None:
    catalog = Catalog(
        [
            Item("x-late", "banner", valid_from=NOW + 30),
            Item("x-early", "banner", valid_to=NOW + 70),
        ]
    )
    d = picks_decide(catalog, "fixed", NOW)
    assert d.placements[0].content == ["x-early"] and d.expires == NOW + 30
    d = picks_decide(catalog, "fixed", NOW + 30)
    assert d.placements[0].content == ["x-late", "x-early"] and d.expires == NOW + 70


def test_recency_expires_with_its_bucket() -> None:
    catalog = Catalog(
        [
            Item("a-old", "article", published_at=NOW - 30 * DAY),
            Item("a-new", "article", published_at=NOW - DAY),
        ]
    )
    d = picks_decide(catalog, "fresh", NOW)
    bucket_end = (NOW // RECENCY_BUCKET_S + 1) * RECENCY_BUCKET_S
    assert d.placements[0].content == ["a-new"] and d.expires == bucket_end


def test_exclusions_by_live_activity_expire_within_a_second() -> None:
    catalog = Catalog([Item("b1", "banner", priority=2), Item("b2", "banner", priority=1)])
    assert picks_decide(catalog, "unseen", NOW).expires == math.inf
    d = picks_decide(catalog, "unseen", NOW, Activity(views=["b1"]))
    assert d.placements[0].content == ["b2"] and d.expires == NOW + 1.0
    # a pick that excludes nothing does not read live activity
    assert picks_decide(catalog, "p", NOW, Activity(views=["b1"])).expires == math.inf


# -- thompson experiments ---------------------------------------------------------------------

BANDIT = """
sites:
  default:
    placements:
      hero:
        default: {variant: base}
        rules:
          - {id: everyone, when: "true", then: {variant: base}}
experiments:
  - id: exp
    salt: s1
    placement: hero
    strategy: thompson
    arms:
      - {name: a, weight: 0.5, variant: va}
      - {name: b, weight: 0.5, variant: vb}
"""


class Stats:
    def __init__(self, window_s: float) -> None:
        self._window_s = window_s

    @property
    def window_s(self) -> float:
        return self._window_s

    def counts(self, experiment_id: str, window: int) -> Mapping[str, tuple[int, int]]:
        return {"a": (window % 7, 20), "b": (window % 5, 20)}


@pytest.mark.parametrize("window_s", [60.0, 3600.0, 0.1, 7.3])
def test_thompson_expires_with_its_window(window_s: float) -> None:
    eng = engine_from(BANDIT)
    stats = Stats(window_s)
    d = eng.decide(visitor_id="v1", profile=None, ctx=ctx(), placements=["hero"], stats=stats)
    end = d.expires
    assert NOW < end <= NOW + window_s
    assert (end // window_s) > (NOW // window_s)
    assert math.nextafter(end, -math.inf) // window_s == NOW // window_s
    # without live statistics the declared weights hold for ever
    d = eng.decide(visitor_id="v1", profile=None, ctx=ctx(), placements=["hero"])
    assert d.expires == math.inf


def test_thompson_arms_change_at_some_window_end() -> None:
    eng = engine_from(BANDIT)
    stats = Stats(60.0)
    changed = 0
    for i in range(40):
        vid = f"v{i}"
        d = eng.decide(visitor_id=vid, profile=None, ctx=ctx(), placements=["hero"], stats=stats)
        assert d.expires == (NOW // 60 + 1) * 60
        for t in (NOW + 0.5, d.expires - 0.001):
            again = eng.decide(
                visitor_id=vid, profile=None, ctx=ctx(now=t), placements=["hero"], stats=stats
            )
            assert same(d, again)
        nxt = eng.decide(
            visitor_id=vid, profile=None, ctx=ctx(now=d.expires), placements=["hero"], stats=stats
        )
        changed += not same(d, nxt)
    assert changed > 0


def test_next_multiple_is_never_late() -> None:
    rng = random.Random(3)
    for _ in range(2000):
        step = rng.choice([0.1, 0.3, 7.3, 60.0, 1e-3, 86400.0, rng.uniform(1e-3, 1e4)])
        now = rng.uniform(0, 2e9)
        end = expiry.next_multiple(now, step)
        # exact: the first float in the next window
        assert end > now and end // step > now // step
        assert math.nextafter(end, -math.inf) // step == now // step
    assert expiry.next_multiple(5.0, 0.0) == 5.0


# -- what compiled functions read ---------------------------------------------------------------


def _bytecode_bits(fn: object) -> int:
    """What the bytecode of a compiled function loads (ground truth for the AST-based flags)."""
    bits = 0
    for code in code_objects(fn):  # type: ignore[arg-type]
        for ins in dis.get_instructions(code):
            vals = ins.argval if isinstance(ins.argval, tuple) else (ins.argval,)
            bits |= expiry.uses([v for v in vals if isinstance(v, str)], (), frozenset())
        bits |= expiry.uses([*code.co_freevars, *code.co_cellvars], (), frozenset())
    return bits


def test_flags_cover_what_the_bytecode_reads() -> None:
    ruleset, _ = rules.load(DEMO)
    assert ruleset is not None
    eng = rules.compile_ruleset(ruleset)
    fns = [eng._segments_fn, eng._actions_fn]
    assert eng._segments_uses == expiry.TRACKED  # days_since(…) > 90 in `at_risk`
    assert eng._tracked
    for per in eng._table.values():
        for prog in per.values():
            assert prog.uses | _bytecode_bits(prog.fn) == prog.uses
            fns.append(prog.fn)
    for fn in fns:
        assert fn is not None
        assert eng._shared.uses(fn) | _bytecode_bits(fn) == eng._shared.uses(fn)
    hero = eng._table[("default", None)]["home_hero"]
    assert hero.uses == expiry.HOUR  # night_owl
    assert eng._table[("default", None)]["cart_upsell"].uses == expiry.RECENT


def test_every_helper_is_declared_clock_free_or_counts_as_now() -> None:
    assert set(HELPERS) <= CLOCK_FREE_HELPERS
    assert expiry.uses(["A"], ["_clock"], CLOCK_FREE_HELPERS) == expiry.NOW
    assert expiry.uses(["A", "_len"], ["_len"], CLOCK_FREE_HELPERS) == 0
    assert expiry.uses(["H", "W", "RK"], (), CLOCK_FREE_HELPERS) == (
        expiry.HOUR | expiry.WEEKDAY | expiry.RECENT
    )
    assert "NOW" in ARGS and Shared().uses(lambda: None) == expiry.NOW  # not compiled here


def test_regexes_are_clock_free() -> None:
    d = decide_one('profile.country.matches("^F")')
    assert d.placements[0].variant == "yes" and d.expires == math.inf


# -- the clock ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "zone", [None, "Europe/Paris", "Asia/Kolkata", "Asia/Kathmandu", "America/St_Johns"]
)
def test_clock_until_no_change_before_it(zone: str | None) -> None:
    rng = random.Random(hash(zone) & 0xFFFF)
    for _ in range(200):
        now = rng.uniform(1.0e9, 1.9e9)
        c = Context(now=now, timezone=zone)
        hour, weekday, turn = clock_until(c)
        assert now < turn <= now + QUARTER
        t = now
        while t < turn:
            assert clock(Context(now=t, timezone=zone)) == (hour, weekday)
            t = min(turn - 1e-6, t + 59.0) if t < turn - 1e-6 else turn


def test_clock_until_off_quarter_offsets_and_transitions() -> None:
    # Monrovia was UTC-0:44:30 until 1972: its hour changed off the quarter hour.
    t = datetime(1971, 4, 1, 3, 20, tzinfo=UTC).timestamp()
    assert clock_until(Context(now=t, timezone="Africa/Monrovia"))[2] == t + 60
    # St John's moved its clocks from 00:01 to 01:01 local (at 03:31 UTC) on 2007-03-11.
    zone = "America/St_Johns"
    t = datetime(2007, 3, 11, 3, 20, tzinfo=UTC).timestamp()
    assert clock_until(Context(now=t, timezone=zone))[2] == t + 600  # before: the quarter hour
    t += 600  # 03:30 UTC: the quarter with the transition in it
    assert clock_until(Context(now=t, timezone=zone))[2] == t + 60
    assert clock(Context(now=t + 59, timezone=zone))[0] == 0
    assert clock(Context(now=t + 60, timezone=zone))[0] == 1
    assert clock_until(Context(now=t, hour=1, weekday=2)) == (1, 2, math.inf)


# -- property: nothing changes before `expires` ---------------------------------------------------


def _variant_demo() -> str:
    # Without `at_risk`'s days_since: the other sources of time dependence, on their own.
    text = DEMO.read_text()
    old = " or days_since(profile.last_seen['category:shoes']) > 90"
    assert text.count(old) == 1
    return text.replace(old, "")


LAST = "profile.last_seen['category:shoes']"
# Tracked comparisons in every position: behind and ahead of clock-dependent and clock-free
# operands of `and`/`or`, under `not`, reversed, in segments, placements and actions.
TRACKED_SEGMENTS = f"""
  night_or_lapsed: "ctx.hour >= 21 or days_since({LAST}) > 30"
  recent_weekday: "days_since({LAST}) < 7 and not (ctx.weekday == 5)"
  ripe: "89.99999 <= days_since({LAST}) and 'vip' in profile.segments or 90 >= days_since({LAST})"
"""
TRACKED_PLACEMENT = f"""
      winback:
        default: none
        rules:
          - id: w1
            when: "ctx.hour < 12 and days_since({LAST}) >= 30"
            then: morning_back
          - id: w2
            when: "segment.gold_plus or 7 > days_since({LAST})"
            then: fresh
          - id: w3
            when: "not (days_since({LAST}) > 89.99999) and segment.night_or_lapsed"
            then: mid
"""
TRACKED_ACTION = f"""
  - id: lapsing_day
    when: "days_since({LAST}) >= 14 and ctx.weekday != 5"
    priority: 3
"""
# Where the edges of the comparisons above lie (days after last_seen).
THRESHOLDS = {"demo": [90.0], "tracked": [90.0, 89.99999, 30.0, 14.0, 7.0]}


def _tracked_demo() -> str:
    text = DEMO.read_text()
    for anchor, extra in (
        ("  bargain_hunter:", TRACKED_SEGMENTS.lstrip("\n")),
        ("      home_recs:", TRACKED_PLACEMENT.lstrip("\n")),
        ("  - id: newsletter_signup", TRACKED_ACTION.lstrip("\n")),
    ):
        assert text.count(anchor) == 1
        text = text.replace(anchor, extra + anchor)
    return text


def _near_edge(rng: random.Random, profile: Profile | None, now: float, source: str) -> Profile:
    """A profile whose last_seen puts one comparison's edge just before or after ``now``: within
    float rounding, a second, a quarter hour, a few days."""
    offset = rng.choice(
        [
            rng.uniform(0, 1e-4),
            rng.uniform(0, 1),
            rng.uniform(-1, 0),
            rng.uniform(0, 900),
            rng.uniform(-900, 0),
            rng.uniform(0, 3 * DAY),
        ]
    )
    base = profile or rng.choice([ALICE, BRUNO, CHLOE])
    last = now - rng.choice(THRESHOLDS[source]) * DAY + offset
    return replace(base, id=f"{base.id}-edge", last_seen={"category:shoes": last})


def _timed_catalog(base: float) -> Catalog:
    items = list(demo_catalog().items.values())
    rng = random.Random(11)
    tags = ["running", "camping", "climbing", "fashion", "hiking", "default", "budget", "premium"]
    for i in range(30):
        start = base + rng.uniform(-3000, 3000) if rng.random() < 0.6 else None
        end = base + rng.uniform(-1000, 6000) if rng.random() < 0.6 else None
        items.append(
            Item(
                f"t{i}",
                rng.choice(["banner", "product", "article", "offer"]),
                rng.sample(tags, 2) + (["fresh"] if i % 3 == 0 else []),
                placements=rng.sample(["home_hero", "home_recs", "cart_upsell"], 2),
                valid_from=start,
                valid_to=end,
                published_at=base - rng.uniform(0, 40 * DAY),
                priority=rng.uniform(0, 10),
            )
        )
    return Catalog(items)


@dataclass
class Case:
    profile: Profile | None
    ctx: dict[str, object]
    placements: list[str]
    recent: Activity | None

    def at(self, eng: rules.Engine, catalog: Catalog, t: float) -> rules.Decision:
        return eng.decide(
            visitor_id=self.profile.id if self.profile else None,
            profile=self.profile,
            ctx=Context(now=t, **self.ctx),  # type: ignore[arg-type]
            placements=self.placements,
            content=catalog,
            recent=self.recent,
        )


def _case(rng: random.Random) -> Case:
    page = ["home_hero", "home_recs", "article_sidebar", "cart_upsell", "winback", "nope"]
    zones = [None, "Europe/Paris", "Asia/Kolkata", "America/St_Johns", "Asia/Kathmandu"]
    kw: dict[str, object] = {
        "site": rng.choice(["default", "shop-fr", "shop-de", "shop-uk"]),
        "locale": rng.choice([None, "fr-FR", "de-DE", "en-GB", "cy-GB"]),
        "timezone": rng.choice(zones),
        "geo": Geo(city=rng.choice([None, "Paris", "Lyon"])),
        "consent": rng.random() < 0.85,
    }
    if rng.random() < 0.3:
        kw["hour"] = rng.randrange(24)
    if rng.random() < 0.3:
        kw["weekday"] = rng.randrange(7)
    recent = None
    if rng.random() < 0.4:
        recent = Activity(
            views=rng.sample(["p-shoe", "p-tent", "t1", "t2"], 1),
            cart=rng.sample(["p-gel", "p-rope"], rng.randrange(2)),
        )
    profile = rng.choice([ALICE, BRUNO, CHLOE, None])
    return Case(profile, kw, rng.sample(page, rng.randrange(1, len(page) + 1)), recent)


@pytest.mark.parametrize("source", ["demo", "variant", "tracked"])
def test_decisions_hold_until_they_expire(source: str) -> None:
    text = {"demo": DEMO.read_text, "variant": _variant_demo, "tracked": _tracked_demo}[source]()
    ruleset, diags = rules.load(text, filename="demo.yaml")
    assert ruleset is not None, rules.render_all(diags)
    eng = rules.compile_ruleset(ruleset)
    rng = random.Random({"demo": 2026, "variant": 7, "tracked": 11}[source])
    base = 1_780_056_000.0  # Friday 2026-05-29 12:00 UTC
    catalog = _timed_catalog(base)
    bounds: dict[str, int] = {"inf": 0, "second": 0, "longer": 0}
    changed = segments_flipped = 0
    for _ in range(400):
        case = _case(rng)
        now = base + rng.uniform(-2 * DAY, 2 * DAY)
        if source != "variant" and rng.random() < 0.6:
            case.profile = _near_edge(rng, case.profile, now, source)
        d = case.at(eng, catalog, now)
        assert d.expires > now
        if d.expires == math.inf:
            bounds["inf"] += 1
            probes = [now + rng.uniform(0, 400 * DAY) for _ in range(4)]
        else:
            bounds["second" if d.expires == now + 1.0 else "longer"] += 1
            last = math.nextafter(d.expires, -math.inf)
            probes = [min(now + rng.uniform(0, d.expires - now), last) for _ in range(3)]
            probes.append(last)
        for t in probes:
            assert same(case.at(eng, catalog, t), d), (case, now, t, d.expires)
        if d.expires != math.inf:
            # tight bounds: the decision changes right at them (edges: within their epsilon)
            later = case.at(eng, catalog, d.expires + EPS)
            changed += not same(later, d)
            segments_flipped += later.segments != d.segments
    # every kind of bound occurs (the tracked segments read the hour: few decisions never expire),
    # and some are tight: the decision changes right at them
    assert min(bounds.values()) > (0 if source == "tracked" else 10), bounds
    assert changed > 0, (bounds, changed)
    if source != "variant":
        # days_since edges decide many of those bounds (segments are in every decision)
        assert segments_flipped > 30, (bounds, changed, segments_flipped)
