"""The decision service shares decisions between visitors only where they must be identical."""

from __future__ import annotations

from pathlib import Path

import msgspec
import orjson

import rules
from server.config import DecisionLogSettings
from server.decide.log_record import logged_context
from server.decide.service import DecisionService
from server.decide.world import World
from server.decision_log import DecisionLog
from server.metrics import Metrics
from server.visitor import Visitor

NOON = 1_780_056_000.0  # 2026-05-29 12:00:00 UTC, a quarter-hour boundary

RULES = """
schema:
  attributes: {tier: string}
sites:
  default:
    placements:
      hero:
        default: plain
        rules:
          - {id: everyone, when: ctx.consent, then: welcome}
      clock:
        default: morning
        rules:
          - {id: afternoon, when: ctx.hour >= 12, then: afternoon}
experiments:
  - id: hero_test
    salt: hero-1
    placement: hero
    rule: everyone
    holdout: 0.2
    arms:
      - {name: control, weight: 0.5}
      - {name: big, weight: 0.5, variant: big}
"""


def engine() -> rules.Engine:
    ruleset, diagnostics = rules.load(RULES, filename="t.yaml")
    assert ruleset is not None, [rules.render(d) for d in diagnostics]
    return rules.compile_ruleset(ruleset)


def service() -> DecisionService:
    return DecisionService(Metrics(), time_budget_ms=50, memo_age_s=3600, memo_entries=1000)


def cookie(value: str) -> Visitor:
    return Visitor(ids={"cookie": value})


def test_unknown_visitors_share_a_decision_only_when_their_arms_agree() -> None:
    world = World(engine=engine())
    svc = service()
    ctx = rules.Context(site="default", now=NOON)
    for i in range(300):
        served = svc.serve(world, cookie(f"anon-{i}"), ctx, ["hero"]).decision.placements[0]
        alone = world.engine.decide(  # type: ignore[union-attr]
            visitor_id=f"anon-{i}", profile=None, ctx=ctx, placements=["hero"]
        ).placements[0]
        assert (served.arm, served.variant) == (alone.arm, alone.variant), f"anon-{i}"
    # Three arms (control, big, holdout): most of the 300 were answered from the shared memo.
    assert svc.memo.hits > 250


def test_a_shared_decision_is_not_reused_past_its_expiry() -> None:
    world = World(engine=engine())
    svc = service()
    before = rules.Context(site="default", now=NOON - 60)
    assert (
        svc.serve(world, Visitor(), before, ["clock"]).decision.placements[0].variant == "morning"
    )
    later = rules.Context(site="default", now=NOON - 1)
    assert svc.serve(world, Visitor(), later, ["clock"]).decision.placements[0].variant == "morning"
    assert svc.memo.hits == 1
    at_noon = rules.Context(site="default", now=NOON)
    decision = svc.serve(world, Visitor(), at_noon, ["clock"]).decision
    assert decision.placements[0].variant == "afternoon"


def test_a_fresh_decision_is_counted_at_once_reuses_at_the_next_flush() -> None:
    world = World(engine=engine())
    svc = service()
    ctx = rules.Context(site="default", now=NOON)
    served = svc.serve(world, Visitor(), ctx, ["clock"])
    assert svc.metrics.decisions.values[("clock", "afternoon")] == 1
    for _ in range(4):
        svc.reuse(served, NOON)
    assert svc.metrics.decisions.values[("clock", "afternoon")] == 1
    svc.flush_counts()
    assert svc.metrics.decisions.values[("clock", "afternoon")] == 5


def test_a_strangers_decision_is_shared_exactly_with_the_strangers_in_its_arm() -> None:
    # The decision memo shares a stranger's decision (issue 15: it took over from the strangers'
    # answer memo): with every stranger whose arms are the same, and only with them.
    world = World(engine=engine())
    svc = service()
    ctx = rules.Context(site="default", now=NOON)
    first = svc.serve(world, cookie("anon-0"), ctx, ["hero"])
    arm = first.decision.placements[0].arm
    shared = 0
    for i in range(1, 200):
        alone = world.engine.decide(  # type: ignore[union-attr]
            visitor_id=f"anon-{i}", profile=None, ctx=ctx, placements=["hero"]
        ).placements[0]
        hits = svc.memo.hits
        served = svc.serve(world, cookie(f"anon-{i}"), ctx, ["hero"]).decision.placements[0]
        assert (served.variant, served.arm) == (alone.variant, alone.arm)
        if served.arm == arm:
            shared += svc.memo.hits - hits
    assert shared > 0
    # Without consent there is no one to tell apart: one decision for all.
    no_consent = rules.Context(site="default", now=NOON, consent=False)
    once = svc.serve(world, cookie("anon-0"), no_consent, ["hero"]).decision
    assert all(
        svc.serve(world, cookie(f"x{i}"), no_consent, ["hero"]).decision is once for i in range(9)
    )


PAGES = """
version: 1
sites:
  default:
    pages:
      - {path: "/p/{n}", placements: [hero]}
      - {path: "/sale", placements: [clock]}
    placements:
      hero: {default: plain, rules: [{id: everyone, when: ctx.consent, then: welcome}]}
      clock: {default: morning, rules: [{id: pm, when: ctx.hour >= 12, then: afternoon}]}
"""


def test_a_decision_of_named_placements_is_shared_across_pages() -> None:
    # The path chooses the placements of a request naming none; with them named (and rules that
    # read neither the path nor the page), every page view shares one decision.
    ruleset, diagnostics = rules.load(PAGES, filename="t.yaml")
    assert ruleset is not None, [rules.render(d) for d in diagnostics]
    world = World(engine=rules.compile_ruleset(ruleset))
    svc = service()
    first = svc.serve(world, Visitor(), rules.Context(path="/p/1", now=NOON), ["hero"]).decision
    for n in range(2, 20):
        ctx = rules.Context(path=f"/p/{n}", url=f"/p/{n}?x={n}", now=NOON)
        assert svc.serve(world, Visitor(), ctx, ["hero"]).decision is first
    assert svc.memo.hits == 18
    # Naming none, the path decides which placements: never shared across pages.
    page = svc.serve(world, Visitor(), rules.Context(path="/p/1", now=NOON), []).decision
    sale = svc.serve(world, Visitor(), rules.Context(path="/sale", now=NOON), []).decision
    assert [p.placement for p in page.placements] == ["hero"]
    assert [p.placement for p in sale.placements] == ["clock"]


def test_logged_lines_are_the_record_with_its_time_for_fresh_shared_and_reused_answers(
    tmp_path: Path,
) -> None:
    # One record per served answer (its placements encoded once per shared decision), written
    # again at each time it is served: each line is the record as JSON with `t` last.
    world = World(engine=engine())
    svc = service()
    svc.log = DecisionLog(DecisionLogSettings(dir=str(tmp_path)))
    ctx = rules.Context(site="default", now=NOON, url="https://a.example/p?q=é\u2028")
    fresh = svc.serve(world, cookie("anon-1"), ctx, ["hero", "clock"])
    shared = svc.serve(world, Visitor(), msgspec.structs.replace(ctx, consent=False), ["hero"])
    again = svc.serve(world, Visitor(), msgspec.structs.replace(ctx, consent=False), ["hero"])
    assert svc.memo.hits == 1
    times = (NOON + 0.1234, NOON, NOON + 7.5)
    for served in (fresh, shared, again):
        for now in times:
            svc.emit(served, now)
    lines = list(svc.log.buffer)
    assert len(lines) == 9
    expected = []
    for served, consent in ((fresh, True), (shared, False), (again, False)):
        decision = served.decision
        record = {
            "kind": "decision", "visitor": None,  # (no live store: no live key)
            "site": "default", "country": None,
            "hour": 12, "snapshots": world.snapshot_label, "key": decision.key,
            "segments": decision.segments,
            "placements": [
                {"placement": p.placement, "variant": p.variant, "rule": p.rule,
                 "experiment": p.experiment, "arm": p.arm}
                for p in decision.placements
            ],
            "sample": 1.0,
            "ctx": {"consent": consent, "url": ctx.url},
        }  # fmt: skip
        expected += [orjson.dumps({**record, "t": round(now, 3)}) + b"\n" for now in times]
    assert lines == expected
    decoded = orjson.loads(lines[0])
    assert decoded["placements"][0]["placement"] == "hero" and decoded["t"] == 1_780_056_000.123
    assert list(decoded)[-2:] == ["ctx", "t"]


def test_a_record_that_does_not_encode_is_a_counted_drop_not_an_error(tmp_path: Path) -> None:
    svc = service()
    svc.log = DecisionLog(DecisionLogSettings(dir=str(tmp_path)))
    ctx = rules.Context(site="default", now=NOON, url="/p/\ud800")  # a lone surrogate
    served = svc.serve(World(engine=engine()), Visitor(), ctx, ["hero"])
    svc.emit(served, NOON)
    assert not svc.log.buffer and svc.log.dropped["encode_error"] == 1


def test_logged_context_keeps_the_set_fields_in_order() -> None:
    full = rules.Context(
        site="default",
        now=NOON,
        locale="fr",
        url="/p/1?x=1",
        path="/p/1",
        referrer="https://r.example/",
        device="mobile",
        timezone="Europe/Paris",
        weather="rain",
        weekday=4,
        geo=rules.Geo(country="FR", region="IDF", city="Paris"),
        consent=False,
    )
    assert list(orjson.loads(msgspec.json.encode(logged_context(full))).items()) == [
        ("consent", False),
        ("locale", "fr"),
        ("url", "/p/1?x=1"),
        ("path", "/p/1"),
        ("referrer", "https://r.example/"),
        ("device", "mobile"),
        ("timezone", "Europe/Paris"),
        ("weather", "rain"),
        ("weekday", 4),
        ("region", "IDF"),
        ("city", "Paris"),
    ]
    bare = logged_context(rules.Context(site="default", now=NOON))
    assert msgspec.json.encode(bare) == b'{"consent":true}'
