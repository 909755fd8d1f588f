"""Thompson-sampling experiments: convergence toward the better arm, agreement between workers,
stickiness within a window and the exploration floor — on the real live store."""

from __future__ import annotations

import random
from pathlib import Path

import rules
from rules.bandit import seed_of, thompson_weights
from rules.bucketing import Bucketer
from server.live.bandit import StoreArmStats
from server.live.store import Change, LiveStore

RULES = """
version: 1
sites:
  default:
    placements:
      hero:
        default: {variant: base}
        rules:
          - id: everyone
            when: "true"
            then: {variant: base}
experiments:
  - id: exp
    salt: s1
    placement: hero
    strategy: thompson
    exploration: 0.05
    arms:
      - {name: a, weight: 0.5, variant: va}
      - {name: b, weight: 0.5, variant: vb}
"""
WINDOW = 60.0
TRUE_CTR = {"a": 0.03, "b": 0.09}


def _engine() -> rules.Engine:
    ruleset, diagnostics = rules.load(RULES, filename="bandit.yaml")
    assert ruleset is not None, diagnostics
    return rules.compile_ruleset(ruleset)


def _arm(engine: rules.Engine, stats: StoreArmStats, visitor: str, now: float) -> str:
    d = engine.decide(
        visitor_id=visitor,
        profile=None,
        ctx=rules.Context(now=now),
        placements=["hero"],
        stats=stats,
    )
    arm = d.placements[0].arm
    assert arm is not None
    return arm


def test_arms_converge_toward_the_better_one(tmp_path: Path) -> None:
    store = LiveStore(tmp_path / "live", 64 * 1024 * 1024)
    # Two engines on one store stand for two workers of a node.
    workers = [_engine(), _engine()]
    stats = StoreArmStats(store, WINDOW)
    rng = random.Random(7)
    shares: list[float] = []
    try:
        for window in range(12):
            base = window * WINDOW
            changes: list[Change] = []
            shown = {"a": 0, "b": 0}
            for i in range(600):
                visitor = f"w{window}-v{i}"
                arm = _arm(workers[i % 2], stats, visitor, base + i * 0.05)
                # Both workers agree, and a visitor keeps the arm within the window.
                assert _arm(workers[(i + 1) % 2], stats, visitor, base + 59.0) == arm
                shown[arm] += 1
                changes.append(Change(key=visitor, type="view", ts=base, experiment="exp", arm=arm))
                if rng.random() < TRUE_CTR[arm]:
                    changes.append(
                        Change(key=visitor, type="click", ts=base, experiment="exp", arm=arm)
                    )
            # The weights of this window, as the engine computes them from the frozen counts;
            # the engine's arms must be exactly a Bucketer's with these weights.
            names = ["a", "b"]
            counts = stats.counts("exp", window)
            w = thompson_weights(names, counts, seed_of("s1", window), 0.05)
            fixed = Bucketer(f"s1:{window}", list(zip(names, w, strict=True)), 0.0)
            for i in range(300):
                visitor = f"check-{window}-{i}"
                assert _arm(workers[0], stats, visitor, base + 30.0) == fixed.assign(visitor)
            weights = dict(zip(names, w, strict=True))
            store.apply(changes, base)
            shares.append(shown["b"] / 600)
    finally:
        store.close()
    assert abs(shares[0] - 0.5) < 0.1  # no data yet: an even split
    assert sum(shares[-3:]) / 3 > 0.8, shares  # most traffic on the better arm at the end
    assert weights["a"] >= 0.05 - 1e-9  # exploration floor kept
    assert weights["b"] > 0.85, weights


def test_weights_are_deterministic_and_floored() -> None:
    counts = {"a": (5, 100), "b": (50, 100)}
    first = thompson_weights(["a", "b"], counts, seed=42, exploration=0.1)
    assert first == thompson_weights(["a", "b"], counts, seed=42, exploration=0.1)
    assert abs(sum(first) - 1.0) < 1e-9
    assert first[0] == 0.1 and first[1] == 0.9  # b is certainly better: a keeps the floor


def test_without_stats_the_declared_weights_apply() -> None:
    engine = _engine()
    arms = [
        engine.decide(
            visitor_id=f"v{i}", profile=None, ctx=rules.Context(now=0.0), placements=["hero"]
        )
        .placements[0]
        .arm
        for i in range(400)
    ]
    assert 150 < arms.count("b") < 250


def test_a_misspelt_strategy_is_a_diagnostic_with_a_suggestion() -> None:
    _, diagnostics = rules.load(RULES.replace("thompson", "thomson"), filename="bandit.yaml")
    errors = [d for d in diagnostics if d.severity == "error"]
    assert len(errors) == 1
    assert "unknown experiment strategy `thomson`" in errors[0].message
    assert errors[0].suggestion is not None and "thompson" in errors[0].suggestion
    assert (errors[0].line, errors[0].col) == (16, 15)  # the value, where it is written
