"""One decision, fail-open: whatever goes wrong, every placement gets an answer (SPEC §6).

Order of work per request: resolve the visitor (only with consent), then one call into the compiled
rules engine with a deadline. A missing snapshot, a reader or engine fault, or an overrun budget
turns into the placements' declared defaults and a reason, never an exception.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import rules
import snapshots

from .context import Visitor
from .metrics import Metrics
from .world import World

log = logging.getLogger("edgeside.decisions")

# What a page gets when not even the rules are loaded: the site's default, one key for all.
NO_RULES_KEY = "default"


def _bare_fallback(placements: Sequence[str], reason: str) -> rules.Decision:
    return rules.Decision(
        placements=[
            rules.PlacementDecision(
                placement=name,
                variant="default",
                content=[],
                rule=None,
                experiment=None,
                arm=None,
                fallback=reason,
            )
            for name in placements
        ],
        segments=[],
        key=NO_RULES_KEY,
        actions=[],
        ttl=0,
        rule_errors=0,
        trace=None,
    )


def fallback_reason(decision: rules.Decision) -> str | None:
    """The reasons defaults were forced, comma-separated and deduplicated, or None."""
    reasons: list[str] = []
    for placement in decision.placements:
        reason = placement.fallback
        if reason is not None and reason not in reasons:
            reasons.append(reason)
    return ",".join(reasons) if reasons else None


class DecisionService:
    def __init__(self, metrics: Metrics, time_budget_ms: float) -> None:
        self.metrics = metrics
        self.budget_s = time_budget_ms / 1000.0

    def lookup(self, world: World, visitor: Visitor) -> snapshots.Profile | None:
        profiles = world.profiles
        if profiles is None or visitor.anonymous:
            return None
        try:
            if visitor.canonical is not None:
                found = profiles.get(visitor.canonical)
                if found is not None:
                    return found
            return profiles.lookup(visitor.ids) if visitor.ids else None
        except Exception:  # a corrupt record must not break the page: decide as anonymous
            log.exception("profile lookup failed")
            self.metrics.fallbacks.inc(("profile_error",))
            return None

    def decide(
        self,
        world: World,
        visitor: Visitor,
        ctx: rules.Context,
        placements: Sequence[str],
        *,
        explain: bool = False,
    ) -> rules.Decision:
        engine = world.engine
        if engine is None:
            decision = _bare_fallback(placements, "no_rules")
            self.count(decision)
            return decision
        profile = None
        visitor_id: str | None = None
        if ctx.consent:
            profile = self.lookup(world, visitor)
            # Bucket by the person where we know them, so every device lands in the same arm.
            if profile is not None:
                visitor_id = profile.id
            elif visitor.canonical is not None:
                visitor_id = visitor.canonical
            elif visitor.ids:
                visitor_id = next(iter(visitor.ids.values()))
        try:
            decision = engine.decide(
                visitor_id=visitor_id,
                profile=profile,
                ctx=ctx,
                placements=placements,
                content=world.content,
                recent=None,
                explain=explain,
                deadline=time.monotonic() + self.budget_s,
            )
        except Exception:  # the engine promises not to raise; if it does, the page still renders
            log.exception("rules engine raised")
            try:
                decision = engine.fallback(ctx, placements, "internal_error")
            except Exception:
                decision = _bare_fallback(placements, "internal_error")
        self.count(decision)
        return decision

    def count(self, decision: rules.Decision) -> None:
        """Metrics for a decision served (computed now, or reused from the memo)."""
        metrics = self.metrics
        for placement in decision.placements:
            metrics.decisions.inc((placement.placement, placement.variant))
            if placement.fallback is not None:
                metrics.fallbacks.inc((placement.fallback,))
        if decision.rule_errors:
            metrics.rule_errors.inc((), decision.rule_errors)
