"""The compiler's stages (`rules.pipeline`): listed once, in order, each reporting its own errors
with a position, all of them at once."""

from __future__ import annotations

from rules_fakes import SCHEMA, diagnostics

import rules
from rules.loader import load_text
from rules.pipeline import STAGES, check_stage, parse_stage
from rules.read import read
from rules.resolve import resolve


def test_the_stages_in_order() -> None:
    assert STAGES == ("load", "read", "parse", "check", "resolve", "analyse", "compile")
    assert rules.STAGES is STAGES


def test_a_load_error_stops_before_reading() -> None:
    [d] = diagnostics("sites: [unclosed\n")
    assert d.code == "syntax" and d.line == 2


# One mistake for each stage after `load`, in one file: every one is reported, at its place.
EVERY_STAGE = (
    SCHEMA
    + """
segments:
  a: segment.b
  b: segment.a
sites:
  default:
    placements:
      p:
        colour: red
        default: d
        rules:
          - {id: r1, when: 'profile.ltv >', then: x}
          - {id: r2, when: 'profile.tierr == "gold"', then: y}
          - {id: r3, when: 'true', then: z}
          - {id: r3, when: 'false', then: z}
experiments:
  - id: e
    salt: s
    placement: nowhere
    arms: [{name: a, weight: 0.5}, {name: b, weight: 0.5}]
"""
)


def test_each_stage_reports_its_own_errors_at_once() -> None:
    got = {(d.code, d.line) for d in diagnostics(EVERY_STAGE)}
    lines = EVERY_STAGE.splitlines()

    def at(text: str) -> int:
        return next(i for i, t in enumerate(lines, 1) if text in t)

    assert ("unknown-field", at("colour")) in got  # read
    assert ("syntax", at("id: r1")) in got  # parse
    assert ("unknown-attribute", at("id: r2")) in got  # check
    assert ("duplicate-id", at("id: r3, when: 'false'")) in got  # resolve: rule ids
    assert ("unknown-placement", at("placement: nowhere")) in got  # resolve: experiments
    assert ("cycle", at("a: segment.b")) in got  # resolve: segment order


def test_a_failing_condition_does_not_hide_its_rules_other_mistakes() -> None:
    text = SCHEMA + (
        "sites:\n  default:\n    placements:\n      p:\n        default: d\n        rules:\n"
        "          - id: r\n            when: 'profile.ltv >'\n"
        "            score: 'profile.tier'\n            then: {variant: v, ttl: -1}\n"
    )
    codes = sorted(d.code for d in diagnostics(text))
    assert codes == ["bad-value", "syntax", "type-mismatch"], codes


def test_expressions_go_through_the_stages() -> None:
    segments = "segments:\n  big: profile.ltv > 500\n  bad: profile.ltv +\n"
    sites = "sites:\n  default:\n    placements:\n      p: {default: d}\n"
    loaded = load_text(SCHEMA + segments + sites, "t.yaml")
    assert loaded.root is not None
    draft = read(loaded.root, loaded.source)
    big, bad = draft.exprs
    assert (big.stage, bad.stage) == ("read", "read")
    parse_stage(draft)
    assert (big.stage, bad.stage) == ("parsed", "failed")
    used = check_stage(draft)
    assert big.stage == "checked" and big.type.kind == "bool" and used == set()
    ruleset = resolve(draft)
    assert list(ruleset.segments) == ["big"]  # what failed a stage goes no further
    assert [d.code for d in draft.diagnostics] == ["syntax"]


def test_the_next_file_reuses_the_last_ones_trees_and_means_the_same() -> None:
    """Each node of a fleet parses every new version of the rules once: the texts the last file
    had are not parsed again (issue 18), and nothing else changes — a mistake is still found."""
    sites = "sites:\n  default:\n    placements:\n      p: {default: d}\n"

    def drafted(segments: str) -> tuple[list[object], list[str]]:
        loaded = load_text(SCHEMA + segments + sites, "t.yaml")
        assert loaded.root is not None
        draft = read(loaded.root, loaded.source)
        parse_stage(draft)
        return [e.tree for e in draft.exprs], [d.code for d in draft.diagnostics]

    first, _ = drafted("segments:\n  big: profile.ltv > 500\n  bad: profile.ltv +\n")
    again, codes = drafted("segments:\n  big: profile.ltv > 500\n  bad: profile.ltv +\n")
    assert again[0] is first[0]  # reused, not parsed again
    assert codes == ["syntax"]  # a syntax error is never remembered as a tree
    changed, codes = drafted("segments:\n  big: profile.ltv > 600\n")
    assert changed[0] is not first[0] and codes == []
    assert rules.load(SCHEMA + "segments:\n  big: profile.ltv > 600\n" + sites)[0]
