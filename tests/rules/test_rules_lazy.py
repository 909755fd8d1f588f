"""Placements compiled on first use decide exactly as when all are compiled up front, and what the
engine must know before compiling (the context fields, tracked `days_since`) comes out the same
from the checked trees (`rules.reads`) as from the compiled code."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest
from rules_fakes import ALICE, BRUNO, CHLOE, Activity, Profile, ctx, demo_catalog

import rules
from rules.context import KEY_FIELDS
from rules.engine import ENGINE_FIELDS, Engine
from rules.expiry import TRACKED

DEMO = Path(__file__).resolve().parents[2] / "server" / "offline" / "demo_data" / "rules.yaml"


def generated(sites: int = 4, placements: int = 12) -> str:
    """A file whose placements read different context fields per site, some score-sorted, some
    tracking days_since, some inherited unchanged, with pages."""
    conds = [
        "ctx.device == 'mobile'",
        "ctx.geo.country == 'FR' and ctx.hour > 9",
        "days_since(profile.last_seen['category:shoes']) > 30",
        "profile.interests.running >= 0.5",
        "ctx.weekday < 5 or ctx.referrer.startswith('https://news')",
        "ctx.geo.city == 'Lyon'",
        "ctx.page.id == 'x'",
    ]
    out = [
        "version: 1",
        "schema:",
        "  interests: [running]",
        "sites:",
        "  default:",
        "    pages:",
        *(f'      - {{path: "/c{i}/{{id}}", placements: [pl{i}, pl{i + 1}]}}' for i in range(8)),
        "    placements:",
    ]
    for i in range(placements):
        out += [f"      pl{i}:", "        default: d"]
        if i % 3 == 2:
            out.append("        strategy: score_sorted")
        out.append("        rules:")
        for k in range(3):
            cond = conds[(i + k) % len(conds)]
            score = f", score: {k + 1}" if i % 3 == 2 else ""
            out.append(f'          - {{id: r{k}, when: "{cond}", then: v{i}_{k}{score}}}')
    for s in range(1, sites):
        out += [f"  site{s}:", "    placements:"]
        for i in range(s, placements, sites):  # a few overridden per site, the rest inherited
            out += [
                f"      pl{i}:",
                "        default: d",
                "        rules:",
                f'          - {{id: s{s}, when: "{conds[(s + i) % len(conds)]}", then: o{s}}}',
            ]
    return "\n".join(line for line in out if line) + "\n"


def _load(text: str) -> rules.RuleSet:
    ruleset, diags = rules.load(text, filename="t.yaml")
    assert ruleset is not None, rules.render_all(diags)
    return ruleset


def _compiled_reads(engine: Engine) -> tuple[tuple[str, ...], bool]:
    """What the compiled code of every placement (and the segments and actions) reads."""
    shared = engine._shared
    fields = set(ENGINE_FIELDS)
    if engine.ruleset.pages:
        fields.add("path")
    uses = engine._segments_uses | engine._actions_uses
    fns = [engine._segments_fn, engine._actions_fn, *(p.fn for p in engine._memo.values())]
    for fn in fns:
        if fn is not None:
            fields |= shared.ctx_fields(fn)
    for prog in engine._memo.values():
        uses |= prog.uses
    return tuple(f for f in KEY_FIELDS if f in fields), bool(uses & TRACKED)


def _compiled_profile_reads(engine: Engine) -> frozenset[str]:
    """The profile fields the compiled code of every function loads (plus the engine's own)."""
    fns = [engine._segments_fn, engine._actions_fn, *(p.fn for p in engine._memo.values())]
    read = {"id", "interests"}
    for fn in fns:
        if fn is not None:
            read |= engine._shared.profile_fields(fn)
    return frozenset(read)


PROFILES = [
    None,
    ALICE,
    BRUNO,
    CHLOE,
    Profile("p-run", interests={"running": 0.9}, last_seen={"category:shoes": 1_000.0}),
]
CONTEXTS = [
    {},
    {"device": "mobile", "hour": 10, "weekday": 2},
    {"geo": {"country": "FR", "city": "Lyon"}, "hour": 11, "weekday": 6},
    {"referrer": "https://news.example/x", "hour": 3, "weekday": 6},
    {"path": "/c4/x", "device": "mobile"},
]


@pytest.mark.parametrize("source", ["demo", "generated"])
def test_lazy_and_eager_decide_alike(source: str) -> None:
    text = DEMO.read_text() if source == "demo" else generated()
    lazy = rules.compile_ruleset(_load(text), eager=False)
    eager = rules.compile_ruleset(_load(text), eager=True)
    assert lazy.programs_compiled == 0 and eager.programs_compiled > 0
    # Known before any placement compiles, and equal to what the compiled code reads.
    assert (lazy.context_fields, lazy._tracked) == _compiled_reads(eager)
    assert (eager.context_fields, eager._tracked) == _compiled_reads(eager)
    # The profile fields a looked-up profile is decoded to: the same, before any compile.
    assert lazy.profile_fields == eager.profile_fields == _compiled_profile_reads(eager)
    tables = [*lazy.ruleset.table, ("nosuch", None)]  # every (site, locale), and an unknown site
    catalog = demo_catalog() if source == "demo" else None
    for (site, locale), profile, extra in itertools.product(tables, PROFILES, CONTEXTS):
        c = ctx(site=site, locale=locale, **extra)
        names = lazy.placements(site, locale)
        assert names == eager.placements(site, locale)
        args = {
            "visitor_id": getattr(profile, "id", None),
            "profile": profile,
            "ctx": c,
            "placements": names,
            "content": catalog,
            "recent": Activity(cart=["p-1"]),
        }
        assert lazy.decide(**args) == eager.decide(**args)  # type: ignore[arg-type]
    assert lazy.programs_compiled == eager.programs_compiled


def test_a_page_compiles_only_its_placements() -> None:
    engine = rules.compile_ruleset(_load(generated()), eager=False)
    d = engine.decide(visitor_id=None, profile=None, ctx=ctx(path="/c3/x"), placements=[])
    assert [p.placement for p in d.placements] == ["pl3", "pl4"]
    assert engine.programs_compiled == 2
    # site1 inherits pl4 unchanged (it overrides pl1, pl5, pl9): one compiled function for both.
    engine.decide(visitor_id=None, profile=None, ctx=ctx(site="site1", path="/c3/x"), placements=[])
    assert engine.programs_compiled == 2
    engine.decide(visitor_id=None, profile=None, ctx=ctx(site="site1", path="/c1/x"), placements=[])
    assert engine.programs_compiled == 4  # pl1: site1's own; pl2: default's, new here


def test_first_uses_from_many_threads_compile_once() -> None:
    engine = rules.compile_ruleset(_load(generated()), eager=False)
    barrier = threading.Barrier(8)
    results: list[object] = []

    def first() -> None:
        barrier.wait()
        c = ctx(device="mobile", path="/c0/x")
        results.append(engine.decide(visitor_id=None, profile=None, ctx=c, placements=[]))

    threads = [threading.Thread(target=first) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and all(r == results[0] for r in results)
    assert engine.programs_compiled == 2
    assert results[0].rule_errors == 0  # type: ignore[attr-defined]


def test_small_rule_sets_compile_whole_large_ones_lazily() -> None:
    """By default a rule set of up to EAGER_MAX distinct placements compiles when it activates
    (no request pays for a compile); a larger one compiles each placement on first use."""
    from rules.engine import EAGER_MAX

    small = rules.compile_ruleset(_load(generated()))
    assert small.programs_compiled == len(
        {id(p.rules[0]) for per in small.ruleset.table.values() for p in per.values()}
    )
    large = rules.compile_ruleset(_load(generated(sites=2, placements=EAGER_MAX + 1)))
    assert large.programs_compiled == 0
