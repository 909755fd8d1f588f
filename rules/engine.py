"""The engine: compiled rule sets deciding placements per request.

Prepared once (when a rules snapshot activates), evaluated many times: `compile_ruleset` builds one
Python function per distinct placement, one for all segments and one for all actions, plus an index
(site, locale) → placement → program, so a request touches only the rules of its placements.

`decide()` never raises for data problems: a placement whose rules raise on odd profile data falls
back to its default (`fallback="rule_error"`, counted in `rule_errors`); a segment or action whose
condition raises counts as false; an internal fault gives `fallback()` for every placement.

Every decision carries `expires` (rules/expiry.py): what each compiled function can read of the
clock and live data is known from compilation (`Program.uses`, `Engine._segments_uses`, …); per
request the engine ORs the bits of what it ran, keeps the earliest boundary that picks, bandit
windows and tracked `days_since` comparisons (through the request's clock cell) report, and turns
both into one epoch time at the end.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rules import ast
from rules.bandit import seed_of, thompson_weights
from rules.bucketing import HOLDOUT, Bucketer
from rules.compiler import (
    Fn,
    Shared,
    actions_function,
    placement_function,
    segments_function,
    value_function,
)
from rules.context import KEY_FIELDS, Context, clock_until, key_function
from rules.decision import (
    ActionDecision,
    Condition,
    Decision,
    PlacementDecision,
    TraceEntry,
    TraceValue,
    Webhook,
    decision_key,
)
from rules.expiry import HOUR, NOW, RECENT, TRACKED, WEEKDAY, next_multiple
from rules.interfaces import ActivityLike, ArmStats, ContentCatalog, ProfileLike
from rules.model import Action, Experiment, Outcome, Placement, Rule, RuleSet
from rules.picks import PickCache, pick_until

FALLBACK_TTL = 60  # a degraded page should not stay in a CDN for long

_EMPTY_MAP: Mapping[str, float] = {}
_EMPTY_ATTRS: Mapping[str, object] = {}
_EMPTY_SEQ: tuple[str, ...] = ()
_INF = math.inf
_NOW_OR_RECENT = NOW | RECENT
# Context fields the engine reads itself, whatever the rules: `site` and `locale` choose the
# placement table, the pick locale, the actions' sites and the decision key; `consent` gates the
# profile, live activity, the visitor id (experiment arms) and the actions. (`now` is `expires`'.)
# Rules reading `ctx.hour`/`ctx.weekday` add the field and `timezone` (`CLOCK_FIELDS`), which also
# covers the engine's own use of them for `expires`.
ENGINE_FIELDS = ("site", "locale", "consent")


@dataclass(slots=True, eq=False)
class Program:
    placement: Placement
    fn: Fn
    rules: tuple[Rule, ...]
    experiments: tuple[tuple[Experiment, Bucketer], ...]
    uses: int = NOW  # what `fn` can read of the clock and live data (rules/expiry.py)
    explain: dict[int, Fn] = field(default_factory=dict)


def _leaves(node: ast.Node) -> list[ast.Node]:
    """The conditions explain mode reports: operands of and/or/not, down to comparisons."""
    out: list[ast.Node] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, ast.Binary) and n.op in ("and", "or"):
            stack.append(n.right)
            stack.append(n.left)
        elif isinstance(n, ast.Unary) and n.op == "not":
            stack.append(n.operand)
        else:
            out.append(n)
    return out


def _unwrap(text: str) -> str:
    """`(a == b)` → `a == b` when the brackets enclose the whole condition."""
    while text.startswith("(") and text.endswith(")"):
        depth = 0
        for i, ch in enumerate(text):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0 and i < len(text) - 1:
                return text
        text = text[1:-1].strip()
    return text


def _trace_value(v: object) -> TraceValue:
    if v is None or isinstance(v, bool | int | float):
        return v
    if isinstance(v, str):
        return v if len(v) <= 200 else v[:200] + "…"
    if isinstance(v, list | tuple | frozenset | set):
        items = sorted(v, key=str) if isinstance(v, frozenset | set) else list(v)
        return [
            x if x is None or isinstance(x, str | int | float | bool) else str(x)
            for x in items[:50]
        ]
    return str(v)[:200]


class Engine:
    """A compiled rule set. Thread-safe and shareable: it holds no per-request state."""

    def __init__(self, ruleset: RuleSet) -> None:
        self.ruleset = ruleset
        filename = ruleset.filename
        self._shared = Shared()
        self.segment_names: tuple[str, ...] = tuple(ruleset.segments)
        self._segment_index = {name: i for i, name in enumerate(self.segment_names)}
        self._segments_fn: Fn | None = None
        self._segments_uses = 0
        if self.segment_names:
            self._segments_fn = segments_function(
                [e.tree for e in ruleset.segments.values()],
                self._shared,
                self._segment_index,
                filename,
            )
            self._segments_uses = self._shared.uses(self._segments_fn)
        order = sorted(range(len(ruleset.actions)), key=lambda i: (-ruleset.actions[i].priority, i))
        self._actions: tuple[Action, ...] = tuple(ruleset.actions[i] for i in order)
        self._action_decisions = tuple(
            ActionDecision(
                a.id,
                a.priority,
                Webhook(a.webhook_url, a.webhook_method or "POST") if a.webhook_url else None,
            )
            for a in self._actions
        )
        self._actions_fn: Fn | None = None
        self._actions_uses = 0
        if self._actions:
            self._actions_fn = actions_function(
                [a.when.tree if a.when else None for a in self._actions],
                self._shared,
                self._segment_index,
                filename,
            )
            self._actions_uses = self._shared.uses(self._actions_fn)
        memo: dict[tuple[object, ...], Program] = {}
        self._table: dict[tuple[str, str | None], dict[str, Program]] = {}
        for key, per in ruleset.table.items():
            progs: dict[str, Program] = {}
            for name, p in per.items():
                # Sites that inherit a placement unchanged share its compiled function.
                ident = (
                    name,
                    p.strategy,
                    id(p.default),
                    p.ttl,
                    *(id(r) for r in p.rules),
                    "|",
                    *(id(e) for e in p.experiments),
                )
                prog = memo.get(ident)
                if prog is None:
                    prog = self._compile_placement(p, filename)
                    memo[ident] = prog
                progs[name] = prog
            self._table[key] = progs
        self.programs_compiled = len(memo)
        self._lookup_cache: dict[tuple[str, str | None], dict[str, Program]] = {}
        self._picks = PickCache()
        self._site_locales = {name: s.locale for name, s in ruleset.sites.items() if s.locale}
        # (experiment id) → (window, bucketer, window end): bandit weights, once per window.
        self._bandits: dict[str, tuple[int, Bucketer, float]] = {}
        # Whether any function compares days_since with a number (rules.compiler `since`): then
        # every call gets the request's clock cell [until, now], where those comparisons record
        # their edges; else no call does (and no function needs it).
        uses = self._segments_uses | self._actions_uses
        for prog in memo.values():
            uses |= prog.uses
        self._tracked = bool(uses & TRACKED)
        # The context fields a decision can depend on (besides `now`): the engine's own and those
        # any compiled function can read. Actions count even though they run only with consent.
        fields = set(ENGINE_FIELDS)
        for fn in (self._segments_fn, self._actions_fn, *(p.fn for p in memo.values())):
            if fn is not None:
                fields |= self._shared.ctx_fields(fn)
        self.context_fields: tuple[str, ...] = tuple(f for f in KEY_FIELDS if f in fields)
        self._context_key = key_function(self.context_fields)

    def _compile_placement(self, p: Placement, filename: str) -> Program:
        fn = placement_function(
            p.name,
            p.strategy,
            [r.when.tree if r.when else None for r in p.rules],
            [r.score.tree if r.score else None for r in p.rules],
            self._shared,
            self._segment_index,
            filename,
        )
        exps = tuple(
            (e, Bucketer(e.salt, [(a.name, a.weight) for a in e.arms], e.holdout))
            for e in p.experiments
        )
        return Program(p, fn, tuple(p.rules), exps, self._shared.uses(fn))

    def context_key(self, ctx: Context) -> tuple[object, ...]:
        """The values of `context_fields`: contexts with equal keys (and equal `now`) get the same
        decision for the same profile, visitor, placements, content, live activity and statistics
        — a memo key that ignores what these rules never read (`rules.context_key` holds every
        field)."""
        return self._context_key(ctx)

    # -- look-up ----------------------------------------------------------------------------

    def _placements_for(self, site: str, locale: str | None) -> dict[str, Program]:
        key = (site, locale)
        hit = self._lookup_cache.get(key)
        if hit is not None:
            return hit
        table = self._table
        found = (
            table.get(key)
            or table.get((site, None))
            or table.get(("default", locale))
            or table.get(("default", None))
            or {}
        )
        if len(self._lookup_cache) > 4096:
            self._lookup_cache.clear()  # bounded: site and locale come from requests
        self._lookup_cache[key] = found
        return found

    def has_placement(self, site: str, name: str) -> bool:
        return name in self._placements_for(site, None)

    def placements(self, site: str, locale: str | None = None) -> list[str]:
        """Names of the placements a site (and locale) has."""
        return sorted(self._placements_for(site, locale))

    # -- deciding ---------------------------------------------------------------------------

    def decide(
        self,
        *,
        visitor_id: str | None,
        profile: ProfileLike | None,
        ctx: Context,
        placements: Sequence[str],
        content: ContentCatalog | None = None,
        recent: ActivityLike | None = None,
        explain: bool = False,
        deadline: float | None = None,
        stats: ArmStats | None = None,
    ) -> Decision:
        """Decide the named placements for one request. ``deadline`` is a `time.monotonic()`
        instant: placements not started by then get their default (``fallback="deadline"``).
        ``stats`` feeds `strategy: thompson` experiments; without it they use declared weights."""
        try:
            return self._decide(
                visitor_id, profile, ctx, placements, content, recent, explain, deadline, stats
            )
        except Exception:  # fail open: the page renders whatever happens here (SPEC §6)
            d = self.fallback(ctx, placements, "internal_error")
            d.rule_errors += 1
            return d

    def _decide(
        self,
        visitor_id: str | None,
        profile: ProfileLike | None,
        ctx: Context,
        placements: Sequence[str],
        content: ContentCatalog | None,
        recent: ActivityLike | None,
        explain: bool,
        deadline: float | None,
        stats: ArmStats | None = None,
    ) -> Decision:
        errors = 0
        if not ctx.consent:
            # Without consent no profile is read, no live activity used and no identifier bucketed.
            profile = None
            recent = None
            visitor_id = None
        if profile is not None:
            attrs: Mapping[str, object] = profile.attributes
            interests: Mapping[str, float] = profile.interests
            counters: Mapping[str, float] = profile.counters
            last_seen: Mapping[str, float] = profile.last_seen
            upstream: Sequence[str] = profile.segments
            pid: str | None = profile.id
        else:
            attrs, interests, counters, last_seen, upstream, pid = (
                _EMPTY_ATTRS,
                _EMPTY_MAP,
                _EMPTY_MAP,
                _EMPTY_MAP,
                _EMPTY_SEQ,
                None,
            )
        if recent is not None:
            rv, rp, rc, rk = recent.views, recent.purchases, recent.cart, recent.categories
        else:
            rv, rp, rc, rk = _EMPTY_SEQ, _EMPTY_SEQ, _EMPTY_SEQ, _EMPTY_MAP
        hour, weekday, turn = clock_until(ctx)
        now = ctx.now
        # Expiry: `uses` collects what the functions run can read of the clock and live data;
        # `until` is the earliest boundary reported by picks, bandit windows and fallbacks.
        uses = self._segments_uses
        until = _INF
        seg_values: tuple[bool, ...] = ()
        args_head = (attrs, interests, counters, last_seen, upstream, pid, ctx, hour, weekday, now)
        # The clock cell [until, now]: the functions run lower `until` to the edges of their
        # tracked days_since comparisons — segments always, placements when run, actions with
        # consent, as for `uses`.
        cell = [_INF, now] if self._tracked else None
        args_tail = (rv, rp, rc, rk) if cell is None else (rv, rp, rc, rk, cell)
        if self._segments_fn is not None:
            seg_values, seg_errors = self._segments_fn(*args_head, (), *args_tail)
            errors += seg_errors
        args = (*args_head, seg_values, *args_tail)
        trace: list[TraceEntry] | None = None
        trace_args = args
        if explain:
            # Explain re-evaluates conditions (short-circuited ones too): with a cell of its own,
            # so that the decision expires as it would without explain.
            if cell is not None:
                trace_args = (*args[:-1], [_INF, now])
            # Segments first: they are computed once for the request, before any placement.
            trace = [
                TraceEntry("*", "segment", name, bool(value))
                for name, value in zip(self.segment_names, seg_values, strict=False)
            ]
        progs = self._placements_for(ctx.site, ctx.locale)
        # Content in the request's language, else the site's (`locale:` of the site).
        pick_locale = ctx.locale or self._site_locales.get(ctx.site)
        out: list[PlacementDecision] = []
        ttl: int | None = None
        late = False
        for name in placements:
            prog = progs.get(name)
            if prog is None:
                out.append(PlacementDecision(name, "default", [], fallback="unknown_placement"))
                continue
            p = prog.placement
            if not late and deadline is not None and time.monotonic() > deadline:
                late = True
            if late:
                until = min(until, now + 1.0)  # a deadline fallback may not happen later
                out.append(self._default_decision(prog, "deadline"))
                ttl = min(ttl, FALLBACK_TTL) if ttl is not None else min(p.ttl, FALLBACK_TTL)
                if trace is not None:
                    trace.append(TraceEntry(name, "fallback", None, False, note="deadline passed"))
                continue
            uses |= prog.uses
            try:
                idx = prog.fn(*args)
            except Exception as exc:  # odd profile data: this placement fails open
                errors += 1
                out.append(self._default_decision(prog, "rule_error"))
                ttl = min(ttl, FALLBACK_TTL) if ttl is not None else min(p.ttl, FALLBACK_TTL)
                if trace is not None:
                    self._trace_rules(prog, trace_args, trace, len(prog.rules) - 1)
                    trace.append(
                        TraceEntry(
                            name, "fallback", None, False, note=f"rule error: {type(exc).__name__}"
                        )
                    )
                continue
            if idx >= 0:
                rule: Rule | None = prog.rules[idx]
                outcome: Outcome = prog.rules[idx].then
            else:
                rule, outcome = None, p.default
            if trace is not None:
                last = idx if idx >= 0 and p.strategy == "first_match" else len(prog.rules) - 1
                self._trace_rules(prog, trace_args, trace, last)
                if rule is None:
                    trace.append(TraceEntry(name, "default", None, True, note="no rule matched"))
            variant = outcome.variant
            spec = outcome.content
            experiment = arm = None
            for exp, bucketer in prog.experiments:
                if exp.rule is not None and (rule is None or rule.id != exp.rule):
                    continue
                experiment = exp.id
                if exp.strategy == "thompson" and stats is not None:
                    bucketer, window_end = self._bandit(exp, bucketer, stats, now)
                    if window_end < until:
                        until = window_end
                arm = bucketer.assign(visitor_id)
                if arm != HOLDOUT:
                    for a in exp.arms:
                        if a.name == arm:
                            variant = a.variant or variant
                            spec = a.content or spec
                            break
                if trace is not None:
                    trace.append(TraceEntry(name, "experiment", exp.id, True, note=f"arm {arm}"))
                break
            ids: list[str] = []
            if spec is not None:
                if content is not None:
                    try:
                        ids, ids_until = pick_until(
                            spec,
                            content,
                            placement=name,
                            locale=pick_locale,
                            now=now,
                            interests=interests,
                            recent=recent,
                            cache=self._picks,
                        )
                        if ids_until < until:
                            until = ids_until
                    except Exception:  # a broken catalogue item must not break the page
                        errors += 1
                        ids = list(spec.ids)
                else:
                    ids = list(spec.ids)
                if trace is not None:
                    trace.append(TraceEntry(name, "content", None, bool(ids), note=", ".join(ids)))
            t = outcome.ttl if outcome.ttl is not None else p.ttl
            ttl = t if ttl is None else min(ttl, t)
            out.append(
                PlacementDecision(
                    name, variant, ids, rule.id if rule else None, experiment, arm, None
                )
            )
        segments = [n for n, v in zip(self.segment_names, seg_values, strict=False) if v]
        actions: list[ActionDecision] = []
        # Actions trigger webhooks about the visitor: none without consent.
        if self._actions_fn is not None and ctx.consent:
            uses |= self._actions_uses
            flags, action_errors = self._actions_fn(*args)
            errors += action_errors
            site = ctx.site
            for action, flag, decision in zip(
                self._actions, flags, self._action_decisions, strict=True
            ):
                if flag and (action.sites is None or site in action.sites):
                    actions.append(decision)
        if cell is not None and cell[0] < until:
            until = cell[0]
        if errors:
            until = min(until, now + 1.0)  # rule errors: no promise beyond the contract's second
        if uses:
            # Only what can change with `now`: hour/weekday the caller gave do not (then `turn` is
            # inf), and without live activity the recent.* arguments are empty whatever the time.
            if uses & _NOW_OR_RECENT and (uses & NOW or recent is not None):
                until = min(until, now + 1.0)
            elif turn < until and (
                (uses & HOUR and ctx.hour is None) or (uses & WEEKDAY and ctx.weekday is None)
            ):
                until = turn
        return Decision(
            placements=out,
            segments=segments,
            key=decision_key(ctx.site, out),
            actions=actions,
            ttl=ttl if ttl is not None else self.ruleset.default_ttl,
            rule_errors=errors,
            trace=trace,
            expires=until,
        )

    def _bandit(
        self, exp: Experiment, fixed: Bucketer, stats: ArmStats, now: float
    ) -> tuple[Bucketer, float]:
        """The window's bucketer of a thompson experiment (the declared one if stats fail), and
        when the window ends."""
        window_s = stats.window_s
        window = int(now // window_s) if window_s > 0 else 0
        hit = self._bandits.get(exp.id)
        if hit is not None and hit[0] == window and hit[2] > now:
            return hit[1], hit[2]
        # One window for all time when it has no length; else until the next window starts.
        end = next_multiple(now, window_s) if window_s > 0 else _INF
        try:
            names = [a.name for a in exp.arms]
            counts = stats.counts(exp.id, window)
            weights = thompson_weights(names, counts, seed_of(exp.salt, window), exp.exploration)
            bucketer = Bucketer(
                f"{exp.salt}:{window}", list(zip(names, weights, strict=True)), exp.holdout
            )
        except Exception:  # live statistics are an optimisation: never a reason to fail
            # Remembered for the window, so a failing store is not asked on every request.
            bucketer = fixed
        self._bandits[exp.id] = (window, bucketer, end)
        return bucketer, end

    def bandit_weights(self, experiment_id: str) -> dict[str, float] | None:
        """The current window's weights of a thompson experiment (for status and tests)."""
        hit = self._bandits.get(experiment_id)
        if hit is None:
            return None
        b = hit[1]
        out: dict[str, float] = {}
        prev = 0.0
        for name, edge in zip(b.arms, b.cumulative, strict=True):
            top = 1.0 if edge == float("inf") else edge
            out[name] = top - prev
            prev = top
        return out

    def assign(
        self,
        ctx: Context,
        placement: str,
        experiment_id: str,
        visitor_id: str | None,
        stats: ArmStats | None = None,
    ) -> str | None:
        """The arm `decide` would give `visitor_id` in an experiment of a placement (at
        `ctx.now`), or None when the placement has no such experiment — so a caller can tell
        whether two visitors would get the same decision."""
        prog = self._placements_for(ctx.site, ctx.locale).get(placement)
        if prog is None:
            return None
        for exp, bucketer in prog.experiments:
            if exp.id == experiment_id:
                if exp.strategy == "thompson" and stats is not None:
                    bucketer, _ = self._bandit(exp, bucketer, stats, ctx.now)
                return bucketer.assign(visitor_id)
        return None

    def _default_decision(self, prog: Program, reason: str) -> PlacementDecision:
        d = prog.placement.default
        ids = list(d.content.ids) if d.content is not None else []
        return PlacementDecision(prog.placement.name, d.variant, ids, None, None, None, reason)

    def _trace_rules(
        self, prog: Program, args: tuple[object, ...], trace: list[TraceEntry], last: int
    ) -> None:
        name = prog.placement.name
        for rule in prog.rules[: last + 1]:
            if rule.when is None:
                trace.append(TraceEntry(name, "rule", rule.id, True, note="no condition"))
                continue
            text = rule.when.text
            conditions = [
                Condition(_unwrap(text[leaf.start : leaf.end]), self._value(prog, leaf, args))
                for leaf in _leaves(rule.when.tree)
            ]
            whole = self._value(prog, rule.when.tree, args)
            trace.append(TraceEntry(name, "rule", rule.id, whole is True, conditions))

    def _value(self, prog: Program, node: ast.Node, args: tuple[object, ...]) -> TraceValue:
        fn = prog.explain.get(id(node))
        if fn is None:
            fn = value_function(node, self._shared, self._segment_index, self.ruleset.filename)
            prog.explain[id(node)] = fn
        try:
            return _trace_value(fn(*args))
        except Exception as exc:
            return f"error: {type(exc).__name__}"

    def fallback(self, ctx: Context, placements: Sequence[str], reason: str) -> Decision:
        """Every placement at its declared default (static content ids only), for fail-open."""
        progs = self._placements_for(ctx.site, ctx.locale)
        out: list[PlacementDecision] = []
        ttl = FALLBACK_TTL
        for name in placements:
            prog = progs.get(name)
            if prog is None:
                out.append(PlacementDecision(name, "default", [], fallback="unknown_placement"))
                continue
            out.append(self._default_decision(prog, reason))
            ttl = min(ttl, prog.placement.ttl)
        return Decision(
            placements=out,
            segments=[],
            key=decision_key(ctx.site, out),
            actions=[],
            ttl=ttl,
            rule_errors=0,
            trace=None,
            expires=ctx.now + 1.0,  # a fallback answers a fault: no promise beyond a second
        )


def compile_ruleset(ruleset: RuleSet) -> Engine:
    """Compile a checked rule set (from `rules.load`) into an Engine."""
    return Engine(ruleset)
