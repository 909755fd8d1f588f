"""Explain mode shows why a segment matched: each of its conditions with its value."""

from __future__ import annotations

from rules_fakes import NOW, Profile

import rules

RULES = """\
version: 1
schema:
  attributes: {tier: string, ltv: number}
segments:
  vip: profile.tier == "gold" and profile.ltv >= 100
  big: profile.ltv >= 1000 or segment.vip
sites:
  default:
    placements:
      hero:
        default: {variant: plain}
        rules:
          - {id: for_vip, when: segment.vip, then: {variant: vip}}
"""


def _engine() -> rules.Engine:
    ruleset, diags = rules.load(RULES)
    assert ruleset is not None, diags
    return rules.compile_ruleset(ruleset)


def test_segment_entries_carry_their_conditions() -> None:
    engine = _engine()
    profile = Profile("p1", attributes={"tier": "gold", "ltv": 50.0})
    d = engine.decide(
        visitor_id="p1",
        profile=profile,
        ctx=rules.Context(now=NOW),
        placements=["hero"],
        explain=True,
    )
    assert d.trace is not None
    segments = {t.id: t for t in d.trace if t.kind == "segment"}
    vip = segments["vip"]
    assert vip.matched is False
    assert [(c.expr, c.value) for c in vip.conditions] == [
        ('profile.tier == "gold"', True),
        ("profile.ltv >= 100", False),
    ]
    big = segments["big"]
    assert [(c.expr, c.value) for c in big.conditions] == [
        ("profile.ltv >= 1000", False),
        ("segment.vip", False),
    ]
    # Explain costs nothing when off: no trace, the same decision.
    plain = engine.decide(
        visitor_id="p1", profile=profile, ctx=rules.Context(now=NOW), placements=["hero"]
    )
    assert plain.trace is None and plain.key == d.key


def test_anonymous_segment_conditions_are_null_comparisons() -> None:
    d = _engine().decide(
        visitor_id=None, profile=None, ctx=rules.Context(now=NOW), placements=["hero"], explain=True
    )
    assert d.trace is not None
    vip = next(t for t in d.trace if t.kind == "segment" and t.id == "vip")
    assert [c.value for c in vip.conditions] == [False, False]
