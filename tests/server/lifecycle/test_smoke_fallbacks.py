"""Issue 14, defect 7: a rules snapshot whose every decision falls back (`rule_error`) passed
smoke validation — only `internal_error` refused. Now a placement whose sampled decisions fall
back beyond a small share refuses the snapshot and names the rule. (A fake engine stands in for
the rules: which rules the checker lets through is the rules room's business; what a fallback
means for activation is this one's.) Fails on the old code: it raised nothing."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

import rules
import snapshots
from rules.decision import Condition, PlacementDecision, TraceEntry
from server.lifecycle.pipeline import _sample_decisions


class FakeEngine:
    def __init__(self, fail_every: int) -> None:
        self.ruleset = SimpleNamespace(sites={"shop": None})
        self.fail_every = fail_every
        self.calls = 0

    def placements(self, site: str) -> list[str]:
        return ["hero"]

    def decide(self, **kw: Any) -> SimpleNamespace:
        explain = kw.get("explain", False)
        self.calls += 1
        fails = explain or self.calls % self.fail_every == 0
        pick = PlacementDecision("hero", "default", [], fallback="rule_error" if fails else None)
        trace = [
            TraceEntry("hero", "rule", "fine_rule", False, [Condition("ctx.site == 'x'", False)]),
            TraceEntry(
                "hero", "rule", "broken_rule", False, [Condition("has(ctx.site, 1)", "error: T")]
            ),
        ]
        return SimpleNamespace(placements=[pick], trace=trace if explain else None)


def profiles(n: int) -> list[snapshots.Profile]:
    return [cast(snapshots.Profile, SimpleNamespace(id=f"p{i}")) for i in range(n)]


def test_a_rule_failing_on_every_request_refuses_the_snapshot_naming_it() -> None:
    engine = cast(rules.Engine, FakeEngine(fail_every=1))
    with pytest.raises(snapshots.SnapshotError, match=r"'broken_rule'.*rule_error"):
        _sample_decisions(engine, profiles(20), None)


def test_a_rare_fallback_is_allowed() -> None:
    engine = cast(rules.Engine, FakeEngine(fail_every=21))  # one in 21 sampled visitors
    assert _sample_decisions(engine, profiles(20), None) == 21
