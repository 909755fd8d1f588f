"""One decision, fail-open: whatever goes wrong, every placement gets an answer (SPEC §6).

Order of work per request: resolve the visitor (only with consent), then one call into the compiled
rules engine with a deadline. A missing snapshot, a reader or engine fault, or an overrun budget
turns into the placements' declared defaults and a reason, never an exception.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence

import msgspec

import rules
import snapshots

from ..decision_log import DecisionLog
from ..live.bandit import StoreArmStats
from ..live.events import live_key
from ..live.store import Activity, LiveStore
from ..live.triggers import Triggers
from ..memo import AnswerMemo
from ..metrics import Metrics
from ..visitor import Visitor
from .log_record import DecisionRecord, decision_record, placements_json, record_line
from .world import World

log = logging.getLogger("edgeside.decisions")

# What a page gets when not even the rules are loaded: the site's default, one key for all.
NO_RULES_KEY = "default"


def _bare_fallback(
    placements: Sequence[str], reason: str, expires: float = math.inf
) -> rules.Decision:
    """Every placement at `default`; without rules that lasts until a rules snapshot arrives
    (which replaces the world and with it every memo), after an engine fault only a moment."""
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
        expires=expires,
    )


def fallback_reason(decision: rules.Decision) -> str | None:
    """The reasons defaults were forced, comma-separated and deduplicated, or None; first
    `unknown_site` when the site named is not in the rules (decided with `default`'s)."""
    reasons: list[str] = ["unknown_site"] if decision.unknown_site else []
    for placement in decision.placements:
        reason = placement.fallback
        if reason is not None and reason not in reasons:
            reasons.append(reason)
    return ",".join(reasons) if reasons else None


class Served(msgspec.Struct):
    """A decision and what the hot routes need to memoise and log it."""

    decision: rules.Decision
    # The visitor's live key and its update counter when decided: a memoised answer is reused
    # only while the counter is unchanged, so an event changes the next decision at once.
    live_key: str | None = None
    stamp: int = 0
    # The decision-log record, for every reuse of the answer too.
    record: DecisionRecord | None = None
    # Until when the answer stays exactly right (the decision's own bound, and the visitor's
    # live activity's expiry).
    expires: float = math.inf
    # Whether a route may remember this answer for the very same request. Not for an unknown
    # visitor whose decision was shared from the decision memo: those visitors are many and
    # mostly seen once, and the decision memo already holds their decision for all of them.
    remember: bool = True
    # Reuses from an answer memo not yet added to the metrics (see `DecisionService.reuse`).
    uses: int = 0


# Called with (world, the decision served, visitor id, profile, context, placements, activity).
ShadowHook = Callable[
    [
        World,
        rules.Decision,
        str | None,
        rules.ProfileLike | None,
        rules.Context,
        Sequence[str],
        Activity | None,
    ],
    None,
]


class DecisionService:
    def __init__(
        self,
        metrics: Metrics,
        time_budget_ms: float,
        memo_age_s: float = 0,
        memo_entries: int = 0,
        memo_bytes: int = 64 << 20,
    ) -> None:
        self.metrics = metrics
        self.budget_s = time_budget_ms / 1000.0
        # Decisions by what they depend on (see `serve`); cleared when the world changes. An
        # entry's key is small (versions, placements, a profile id, the context fields read):
        # `ENTRY_BYTES` each; its decision is shared with every answer made from it.
        # Each decision is kept with its placements as decision-log JSON (`placements_json`),
        # made once and embedded as it is in the record of every request that shares it.
        self.memo: AnswerMemo[tuple[rules.Decision, msgspec.Raw | None]] = AnswerMemo(
            memo_age_s, memo_entries, memo_bytes
        )
        # Set in the worker's lifespan, after the fork (SPEC §10); None means no live store.
        self.live: LiveStore | None = None
        self.arm_stats: StoreArmStats | None = None
        self.log: DecisionLog | None = None
        self.triggers: Triggers | None = None
        self._pending: list[Served] = []
        # A shadow candidate (server/console/shadow.py) sees decisions served; None costs nothing.
        self.shadow: ShadowHook | None = None

    def still_current(self, served: Served) -> bool:
        """Whether a memoised answer may be reused: no event touched its visitor since."""
        live = self.live
        if live is None or served.live_key is None:
            return True
        try:
            return live.stamp(served.live_key) == served.stamp
        except Exception:  # a store fault must not break the page: recompute
            return False

    def reuse(self, served: Served, now: float) -> None:
        """Account for an answer served again from a memo: counted and logged like a fresh one."""
        self._tally(served)
        if served.record is not None:
            self.emit(served, now)

    def _tally(self, served: Served) -> None:
        """Count a reused `served` once more in the decision metrics — at the next
        `flush_counts`: a memo hit costs a few µs, and an update per placement each time would be
        a good part of it. (A fresh decision is counted at once, `count`: deferred, it was the
        same updates later, out of cache — a flush of 500 took ~2 ms of CPU inside one request.)"""
        if not served.uses:
            pending = self._pending
            pending.append(served)
            if len(pending) > _MAX_PENDING:
                self.flush_counts()
        served.uses += 1

    def flush_counts(self) -> None:
        """Add the decisions served since the last call to the metrics (before a scrape)."""
        pending, self._pending = self._pending, []
        for served in pending:
            self.count(served.decision, served.uses)
            served.uses = 0

    def emit(self, served: Served, now: float) -> None:
        """Log a served decision (sampled): for fresh and memoised answers alike."""
        dlog = self.log
        if dlog is not None and served.record is not None and dlog.sampled():
            try:
                line = record_line(served.record, now)
            except (msgspec.EncodeError, UnicodeEncodeError):  # e.g. a lone surrogate: no 5xx
                log.exception("decision log record not encodable")
                dlog.dropped["encode_error"] += 1
                return
            dlog.add_line(line)

    def lookup(
        self, world: World, visitor: Visitor, fields: frozenset[str] | None = None
    ) -> snapshots.Profile | snapshots.ProfileView | None:
        """The visitor's profile; given `fields` (the engine's `profile_fields`), decoded only as
        far as the rules read it."""
        profiles = world.profiles
        if profiles is None or visitor.anonymous:
            return None
        try:
            if visitor.canonical is not None:
                found = profiles.get(visitor.canonical, fields)
                if found is not None:
                    return found
            return profiles.lookup(visitor.ids, fields) if visitor.ids else None
        except Exception:  # a corrupt record must not break the page: decide as anonymous
            log.exception("profile lookup failed")
            self.metrics.fallbacks.inc(("profile_error",))
            return None

    def serve(
        self,
        world: World,
        visitor: Visitor,
        ctx: rules.Context,
        placements: Sequence[str],
        *,
        explain: bool = False,
    ) -> Served:
        engine = world.engine
        if engine is None:
            served = Served(_bare_fallback(placements, "no_rules"))
            self.count(served.decision)
            return served
        profile = None
        visitor_id: str | None = None
        key: str | None = None
        stamp = 0
        recent = None
        if ctx.consent:
            # Explain and a shadow candidate (another engine) may read more than these rules.
            whole = explain or self.shadow is not None
            profile = self.lookup(world, visitor, None if whole else engine.profile_fields)
            # Bucket by the person where we know them, so every device lands in the same arm.
            visitor_id = profile.id if profile is not None else _bucketing_id(visitor)
            live = self.live
            if live is not None:
                key = live_key(profile.id if profile is not None else None, visitor)
                if key is not None:
                    try:
                        recent, stamp = live.read(key, ctx.now)
                    except Exception:  # decide without live activity rather than fail
                        log.exception("live store read failed")
                        self.metrics.fallbacks.inc(("live_error",))
                    if recent is not None and recent.consent is False:
                        # Withdrawn by an event: decide as for a visitor without consent.
                        ctx = msgspec.structs.replace(ctx, consent=False)
                        profile, visitor_id, recent = None, None, None
        # A decision depends on the snapshots, the placements, the context fields the rules read
        # (`Engine.named_context_key`: the path only where it matters), the profile, the
        # visitor's live activity and the clock — and on the visitor id only through experiment
        # arms. So visitors without live activity share decisions: the same person on another
        # page, device or URL parameter, and every unknown visitor in the same context whose
        # arms are the same (checked below). Live activity is per visitor: those decide afresh.
        memo_key = None
        if recent is None and not explain and self.memo.enabled:
            memo_key = (
                world.snapshot_header,
                tuple(placements),
                profile.id if profile is not None else None,
                engine.named_context_key(ctx, placements),
            )
            entry = self.memo.get(memo_key, ctx.now)
            if entry is not None and (
                profile is not None or _same_arms(engine, ctx, entry[0], visitor_id, self.arm_stats)
            ):
                shared = entry[0]
                if self.shadow is not None:
                    self.shadow(world, shared, visitor_id, profile, ctx, placements, None)
                served = self._served(world, ctx, shared, key, stamp, None, entry[1])
                served.remember = profile is not None
                return served
        try:
            decision = engine.decide(
                visitor_id=visitor_id,
                profile=profile,
                ctx=ctx,
                placements=placements,
                content=world.content,
                recent=recent,
                explain=explain,
                deadline=time.monotonic() + self.budget_s,
                stats=self.arm_stats,
            )
        except Exception:  # the engine promises not to raise; if it does, the page still renders
            log.exception("rules engine raised")
            try:
                decision = engine.fallback(ctx, placements, "internal_error")
            except Exception:
                decision = _bare_fallback(placements, "internal_error", ctx.now + 1.0)
        if self.shadow is not None:
            self.shadow(world, decision, visitor_id, profile, ctx, placements, recent)
        # Fallbacks (a deadline overrun, a rule error) are this moment's, not the inputs'.
        shareable = (
            memo_key is not None
            and not decision.rule_errors
            and all(p.fallback is None for p in decision.placements)
        )
        fragment = None
        if self.log is not None and self.log.enabled:
            fragment = placements_json(decision)
        if shareable:
            self.memo.put(memo_key, (decision, fragment), ctx.now, decision.expires)
        return self._served(world, ctx, decision, key, stamp, recent, fragment)

    def _served(
        self,
        world: World,
        ctx: rules.Context,
        decision: rules.Decision,
        key: str | None,
        stamp: int,
        recent: Activity | None,
        logged_placements: msgspec.Raw | None = None,
    ) -> Served:
        """Count, trigger and log a decision for this visitor (fresh or shared);
        `logged_placements` is `placements_json(decision)` when the caller has it."""
        if decision.actions and key is not None and ctx.consent and self.triggers is not None:
            self.triggers.offer(decision.actions, key, ctx.now)
        record = None
        dlog = self.log
        if dlog is not None and dlog.enabled:
            if logged_placements is None:
                logged_placements = placements_json(decision)
            visitor = key if ctx.consent else None
            record = decision_record(
                ctx, decision, visitor, world.snapshot_label, dlog.sample_rate, logged_placements
            )
        expires = decision.expires
        if recent is not None:
            expires = min(expires, recent.expires)
        self.count(decision)
        return Served(decision, key, stamp, record, expires)

    def count(self, decision: rules.Decision, times: int = 1) -> None:
        """Metrics for a decision served `times` (computed now, or reused from a memo)."""
        metrics = self.metrics
        for placement in decision.placements:
            # Label values only from the active rules: a name the rules do not know is the
            # caller's text, and one series per made-up name grew /metrics without bound
            # (issue 14, defect 3). Every such request counts under one fixed label.
            if placement.fallback == "unknown_placement":
                metrics.decisions.inc(UNKNOWN_LABELS, times)
            else:
                metrics.decisions.inc((placement.placement, placement.variant), times)
            if placement.fallback is not None:
                metrics.fallbacks.inc((placement.fallback,), times)
        if decision.rule_errors:
            metrics.rule_errors.inc((), decision.rule_errors * times)
        if decision.unknown_site:
            metrics.fallbacks.inc(("unknown_site",), times)
        if decision.unplaced is not None:
            # A page the rules give no placements, or a URI that names no page: served empty.
            metrics.fallbacks.inc((decision.unplaced,), times)


UNKNOWN_LABELS = ("unknown", "unknown")

# Decisions served since the last metrics flush are kept in a list; past this many, flush at once.
# Small: the worker flushes every 0.2 s anyway (server/app.py), and what waits here is what the
# young GC generation walks (10 000 kept ~60 k objects alive between flushes: issue 15 item 4).
_MAX_PENDING = 500


def _bucketing_id(visitor: Visitor) -> str | None:
    """What experiments bucket a visitor the profiles do not know by: the canonical id they
    gave, else their first identifier."""
    if visitor.canonical is not None:
        return visitor.canonical
    return next(iter(visitor.ids.values()), None)


def _same_arms(
    engine: rules.Engine,
    ctx: rules.Context,
    decision: rules.Decision,
    visitor_id: str | None,
    stats: StoreArmStats | None,
) -> bool:
    """Whether `visitor_id` lands in the same arm of every experiment `decision` went through
    (the only way the visitor id reaches a decision besides the profile)."""
    for p in decision.placements:
        if p.experiment is not None and p.arm != engine.assign(
            ctx, p.placement, p.experiment, visitor_id, stats
        ):
            return False
    return True
