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
import threading
import time
from collections.abc import Iterator, Mapping, Sequence

import msgspec

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
from rules.expiry import TRACKED, next_multiple
from rules.explain import conditions_of, trace, value_of
from rules.interfaces import ActivityLike, ArmStats, ContentCatalog, ProfileLike
from rules.model import Action, Experiment, PickSpec, Placement, Rule, RuleSet
from rules.pages import Page, PageMatcher, split_path
from rules.picks import PickCache, pick_until
from rules.program import Program
from rules.reads import context_reads, profile_reads, reads_page
from rules.request import CTX_ARG, INTERESTS_ARG, NOW_ARG, Request, arguments, expires

FALLBACK_TTL = 60  # a degraded page should not stay in a CDN for long

_INF = math.inf
# Context fields the engine reads itself, whatever the rules: `site` and `locale` choose the
# placement table, the pick locale, the actions' sites and the decision key; `consent` gates the
# profile, live activity, the visitor id (experiment arms) and the actions. (`now` is `expires`'.)
# Rules reading `ctx.hour`/`ctx.weekday` add the field and `timezone` (`CLOCK_FIELDS`), which also
# covers the engine's own use of them for `expires`.
ENGINE_FIELDS = ("site", "locale", "consent")


class Engine:
    """A compiled rule set. Thread-safe and shareable: it holds no per-request state."""

    def __init__(self, ruleset: RuleSet, *, eager: bool = False) -> None:
        self.ruleset = ruleset
        filename = ruleset.filename
        self._shared = Shared()
        self.segment_names: tuple[str, ...] = tuple(ruleset.segments)
        self._segment_index = {name: i for i, name in enumerate(self.segment_names)}
        self._segments_fn: Fn | None = None
        # Explain mode's per-condition functions of the segments, compiled when first asked for.
        self._segment_explain: dict[int, Fn] = {}
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
        # Each placement's function is compiled on its first use, not here: a file of 20 sites ×
        # 1 000 placements activates without compiling the placements no request names (the
        # checker has typed every expression already; compiling a checked tree does not fail).
        # `eager` compiles them all now (tests compare the two).
        self._lock = threading.Lock()
        self._memo: dict[tuple[object, ...], Program] = {}
        self._table: dict[tuple[str, str | None], Programs] = {
            key: Programs(self, per) for key, per in ruleset.table.items()
        }
        self._lookup_cache: dict[tuple[str, str | None], Programs] = {}
        self._picks = PickCache()
        self._site_locales = {name: s.locale for name, s in ruleset.sites.items() if s.locale}
        # (experiment id) → (window, bucketer, window end): bandit weights, once per window.
        self._bandits: dict[str, tuple[int, Bucketer, float]] = {}
        # What the placements' rules read, from their checked trees (`rules.reads`): whether any
        # function compares days_since with a number (rules.compiler `since`) — then every call
        # gets the request's clock cell [until, now], where those comparisons record their edges;
        # else no call does (and no function needs it) — and the context fields they can read.
        # Each distinct rule once: sites inheriting a placement share its rules, and the parse
        # stage shares one tree between equal expressions.
        rules_seen = {
            id(r): r for per in ruleset.table.values() for p in per.values() for r in p.rules
        }
        trees = {
            id(tree): tree
            for r in rules_seen.values()
            for tree in (r.when.tree if r.when else None, r.score.tree if r.score else None)
            if tree is not None
        }
        placement_fields, placement_tracked = context_reads(trees.values())
        self._reads_page = reads_page(
            [
                *trees.values(),
                *(e.tree for e in ruleset.segments.values()),
                *(a.when.tree for a in ruleset.actions if a.when),
            ]
        )
        uses = self._segments_uses | self._actions_uses
        self._tracked = bool(uses & TRACKED) or placement_tracked
        # The context fields a decision can depend on (besides `now`): the engine's own and those
        # any function can read. Actions count even though they run only with consent.
        fields = set(ENGINE_FIELDS) | placement_fields
        for fn in (self._segments_fn, self._actions_fn):
            if fn is not None:
                fields |= self._shared.ctx_fields(fn)
        # With the placements named, a decision depends on the path only if a rule reads it or
        # the page's template values (`ctx.page`); else the path only chose the placements of a
        # request that names none. On a real site nearly every page view has its own path: a
        # decision memo keyed by it would hardly ever hit (`named_context_key`).
        named = fields | {"path"} if self._reads_page else set(fields)
        if ruleset.pages:
            # A request naming no placements gets its page's: the path chooses them.
            fields.add("path")
        self.context_fields: tuple[str, ...] = tuple(f for f in KEY_FIELDS if f in fields)
        self._named_key = key_function(named)
        # The profile fields a decision can read (`ProfileLike` names): those any compiled
        # function loads, the id (it buckets experiments) and the interests (picks rank content
        # by them). A caller may hand `decide` a profile with only these (issue 15: decoding a
        # profile is most of its look-up). Explain reads the same functions.
        # Placements compile on first use, so theirs come from their checked trees (a superset of
        # what their code loads, as for the context fields above).
        read = {"id", "interests"} | profile_reads(trees.values())
        for fn in (self._segments_fn, self._actions_fn):
            if fn is not None:
                read |= self._shared.profile_fields(fn)
        self.profile_fields = frozenset(read)
        self._context_key = key_function(self.context_fields)
        if eager:
            for programs in self._table.values():
                programs.compile_all()

        # Per site, the page matcher: built on a site's first request, so activating a snapshot
        # of many sites does not wait for sites no request names.
        self._matchers: dict[str, PageMatcher] = {}
        # `default` is known even when the file declares nothing under it.
        self._known_sites = frozenset({*ruleset.sites, "default"})
        # For readiness (/readyz) and `rules check --sites`.
        self.sites: list[str] = sorted(self._known_sites)

    def page_for(self, site: str, path: str | None) -> Page | None:
        """The page of `path` on `site` (or, for a site the rules do not know, on `default`)."""
        if path is None:
            return None
        matcher = self._matchers.get(site)
        if matcher is None:
            pages = self.ruleset.pages
            key = site if site in pages or site in self.ruleset.sites else "default"
            matcher = self._matchers.get(key)
            if matcher is None:
                matcher = self._matchers[key] = PageMatcher(pages.get(key, []))
            if len(self._matchers) < 4096:  # bounded: sites come from requests
                self._matchers[site] = matcher
        return matcher.match(path)

    @property
    def programs_compiled(self) -> int:
        """How many distinct placement functions are compiled so far."""
        return len(self._memo)

    def program(self, p: Placement) -> Program:
        """The compiled program of a placement, compiled on first use. Sites that inherit a
        placement unchanged share one. Thread-safe: requests of several threads may ask first."""
        ident = (
            p.name,
            p.strategy,
            id(p.default),
            p.ttl,
            *(id(r) for r in p.rules),
            "|",
            *(id(e) for e in p.experiments),
        )
        prog = self._memo.get(ident)
        if prog is None:
            with self._lock:
                prog = self._memo.get(ident)
                if prog is None:
                    prog = self._compile_placement(p, self.ruleset.filename)
                    self._memo[ident] = prog
        return prog

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

    def named_context_key(self, ctx: Context, placements: Sequence[str]) -> tuple[object, ...]:
        """`context_key` for a decision of `placements`: when some are named, without the path
        if neither the rules nor the engine read it for them (a memo key for decisions; the
        placements must be in the same key)."""
        return self._named_key(ctx) if placements else self._context_key(ctx)

    # -- look-up ----------------------------------------------------------------------------

    def _placements_for(self, site: str, locale: str | None) -> Programs:
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
            or _NO_PROGRAMS
        )
        if len(self._lookup_cache) > 4096:
            self._lookup_cache.clear()  # bounded: site and locale come from requests
        self._lookup_cache[key] = found
        return found

    def has_placement(self, site: str, name: str) -> bool:
        return name in self._placements_for(site, None)

    def is_static(self, site: str, name: str, locale: str | None = None) -> bool:
        """Whether a placement gives every request its default variant: no rules, no
        experiments (OFREP's `STATIC` reason, server/ofrep/route.py)."""
        prog = self._placements_for(site, locale).get(name)
        return prog is not None and not prog.rules and not prog.experiments

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
        ``stats`` feeds `strategy: thompson` experiments; without it they use declared weights.
        ``explain`` adds the trace (`rules.explain`), built on a path of its own after the
        decision, which is the same as without it."""
        try:
            d = self._decide(visitor_id, profile, ctx, placements, content, recent, deadline, stats)
            if explain:
                d.trace = self._trace(d, profile, ctx, recent)
            return d
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
        deadline: float | None,
        stats: ArmStats | None,
    ) -> Decision:
        """The steps, one per concern: inputs, segments, each placement (rules, experiment,
        content pick), actions, expiry. `Request` carries what they share."""
        unplaced = None
        if not placements or self._reads_page:
            page = self.page_for(ctx.site, ctx.path)
            if page is not None and page.params and self._reads_page:
                ctx = self._with_params(ctx, page)
            if not placements:
                # None named: the page's (`pages:`), or none at all — an empty decision (its
                # actions still decided), not an error.
                placements = page.placements if page is not None else ()
                if not placements:
                    unplaced = _unplaced(ctx)
        if not ctx.consent:
            # Without consent no profile is read, no live activity used and no identifier bucketed.
            profile = None
            recent = None
            visitor_id = None
        hour, weekday, turn = clock_until(ctx)
        # The clock cell [until, now]: the functions run lower `until` to the edges of their
        # tracked days_since comparisons — segments always, placements when run, actions with
        # consent, as for `uses`.
        cell = [_INF, ctx.now] if self._tracked else None
        head, tail = arguments(profile, recent, ctx, hour, weekday, cell)
        errors = 0
        seg_values: tuple[bool, ...] = ()
        if self._segments_fn is not None:
            seg_values, errors = self._segments_fn(*head, (), *tail)
        args = (*head, seg_values, *tail)
        req = Request(
            args, visitor_id, content, recent, stats, deadline, errors, self._segments_uses
        )
        progs = self._placements_for(ctx.site, ctx.locale)
        out = [self._placement(req, name, progs.get(name)) for name in placements]
        actions = self._actions_for(req, ctx) if self._actions_fn is not None else []
        return Decision(
            placements=out,
            segments=[n for n, v in zip(self.segment_names, seg_values, strict=False) if v],
            key=NO_PLACEMENTS_KEY if unplaced is not None else decision_key(ctx.site, out),
            actions=actions,
            ttl=req.ttl if req.ttl is not None else self.ruleset.default_ttl,
            rule_errors=req.errors,
            trace=None,
            expires=expires(req, ctx, cell, turn),
            unplaced=unplaced,
            unknown_site=ctx.site not in self._known_sites,
        )

    @staticmethod
    def _with_params(ctx: Context, page: Page) -> Context:
        """The context with its page's template values, for `ctx.page.<name>`: a copy, so the
        caller's context (the server reuses them) is never changed."""
        return msgspec.structs.replace(ctx, params=page.params)

    def _placement(self, req: Request, name: str, prog: Program | None) -> PlacementDecision:
        """One placement: its rules, then its experiment, then its content pick."""
        if prog is None:
            return PlacementDecision(name, "default", [], fallback="unknown_placement")
        p = prog.placement
        if not req.late and req.deadline is not None and time.monotonic() > req.deadline:
            req.late = True
        if req.late:
            # a deadline fallback may not happen later
            req.until = min(req.until, req.args[NOW_ARG] + 1.0)  # type: ignore[operator]
            return self._forced(req, prog, "deadline")
        req.uses |= prog.uses
        try:
            idx = prog.fn(*req.args)
        except Exception:  # odd profile data: this placement fails open
            req.errors += 1
            return self._forced(req, prog, "rule_error")
        rule = prog.rules[idx] if idx >= 0 else None
        outcome = rule.then if rule is not None else p.default
        variant, spec = outcome.variant, outcome.content
        experiment = arm = None
        if prog.experiments:
            experiment, arm, variant, spec = self._experiment(req, prog, rule, variant, spec)
        ids = self._content(req, spec, name) if spec is not None else []
        t = outcome.ttl if outcome.ttl is not None else p.ttl
        req.ttl = t if req.ttl is None else min(req.ttl, t)
        rule_id = rule.id if rule is not None else None
        return PlacementDecision(name, variant, ids, rule_id, experiment, arm, None)

    def _forced(self, req: Request, prog: Program, reason: str) -> PlacementDecision:
        """The placement's default, forced (deadline, rule error): short-lived."""
        ttl = prog.placement.ttl if req.ttl is None else req.ttl
        req.ttl = min(ttl, FALLBACK_TTL)
        return self._default_decision(prog, reason)

    def _experiment(
        self,
        req: Request,
        prog: Program,
        rule: Rule | None,
        variant: str,
        spec: PickSpec | None,
    ) -> tuple[str | None, str | None, str, PickSpec | None]:
        """(experiment, arm, variant, content pick): the first experiment of the placement that
        applies to the rule chosen, and the visitor's arm of it."""
        for exp, bucketer in prog.experiments:
            if exp.rule is not None and (rule is None or rule.id != exp.rule):
                continue
            if exp.strategy == "thompson" and req.stats is not None:
                now: float = req.args[NOW_ARG]  # type: ignore[assignment]
                bucketer, window_end = self._bandit(exp, bucketer, req.stats, now)
                if window_end < req.until:
                    req.until = window_end
            arm = bucketer.assign(req.visitor_id)
            if arm != HOLDOUT:
                for a in exp.arms:
                    if a.name == arm:
                        return exp.id, arm, a.variant or variant, a.content or spec
            return exp.id, arm, variant, spec
        return None, None, variant, spec

    def _content(self, req: Request, spec: PickSpec, name: str) -> list[str]:
        """The content ids a pick gives: from the catalogue, or the pick's own ids without one."""
        if req.content is None:
            return list(spec.ids)
        ctx: Context = req.args[CTX_ARG]  # type: ignore[assignment]
        # Content in the request's language, else the site's (`locale:` of the site).
        locale = ctx.locale or self._site_locales.get(ctx.site)
        try:
            ids, ids_until = pick_until(
                spec,
                req.content,
                placement=name,
                locale=locale,
                now=ctx.now,
                interests=req.args[INTERESTS_ARG],  # type: ignore[arg-type]
                recent=req.recent,
                cache=self._picks,
            )
        except Exception:  # a broken catalogue item must not break the page
            req.errors += 1
            return list(spec.ids)
        if ids_until < req.until:
            req.until = ids_until
        return ids

    def _actions_for(self, req: Request, ctx: Context) -> list[ActionDecision]:
        """The eligible actions, by priority. Actions trigger webhooks about the visitor: none
        without consent."""
        if self._actions_fn is None or not ctx.consent:
            return []
        req.uses |= self._actions_uses
        flags, action_errors = self._actions_fn(*req.args)
        req.errors += action_errors
        site = ctx.site
        return [
            decision
            for action, flag, decision in zip(
                self._actions, flags, self._action_decisions, strict=True
            )
            if flag and (action.sites is None or site in action.sites)
        ]

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

    # -- explain (its own path: `rules.explain`) ---------------------------------------------

    def _trace(
        self,
        d: Decision,
        profile: ProfileLike | None,
        ctx: Context,
        recent: ActivityLike | None,
    ) -> list[TraceEntry]:
        """The trace of decision ``d``, from the same inputs (consent applied as `_decide` did)
        and a clock cell of its own, so the decision expires as it would without explain."""
        if not ctx.consent:
            profile = recent = None
        if self._reads_page:
            page = self.page_for(ctx.site, ctx.path)
            if page is not None and page.params:
                ctx = self._with_params(ctx, page)
        hour, weekday, _ = clock_until(ctx)
        cell = [_INF, ctx.now] if self._tracked else None
        head, tail = arguments(profile, recent, ctx, hour, weekday, cell)
        seg_values: tuple[bool, ...] = ()
        if self._segments_fn is not None:
            seg_values = self._segments_fn(*head, (), *tail)[0]
        args = (*head, seg_values, *tail)

        def evaluate(prog: Program, node: ast.Node) -> TraceValue:
            return self._value(prog, node, args)

        def failure(prog: Program) -> str:
            try:
                prog.fn(*args)
            except Exception as exc:
                return type(exc).__name__
            return "none on a second run"  # pragma: no cover - the functions are deterministic

        def segment_conditions(name: str) -> list[Condition]:
            expr = self.ruleset.segments[name]
            return conditions_of(
                expr.text,
                expr.tree,
                lambda node: self._evaluate(self._segment_explain, node, args),
            )

        segments = list(zip(self.segment_names, (bool(v) for v in seg_values), strict=False))
        progs = self._placements_for(ctx.site, ctx.locale)
        return trace(d, progs, segments, evaluate, failure, segment_conditions)

    def _value(self, prog: Program, node: ast.Node, args: tuple[object, ...]) -> TraceValue:
        return self._evaluate(prog.explain, node, args)

    def _evaluate(
        self, cache: dict[int, Fn], node: ast.Node, args: tuple[object, ...]
    ) -> TraceValue:
        """One node's value for explain mode, its function compiled on first use and kept."""
        fn = cache.get(id(node))
        if fn is None:
            fn = value_function(node, self._shared, self._segment_index, self.ruleset.filename)
            cache[id(node)] = fn
        try:
            return value_of(fn(*args))
        except Exception as exc:
            return f"error: {type(exc).__name__}"

    def fallback(self, ctx: Context, placements: Sequence[str], reason: str) -> Decision:
        """Every placement at its declared default (static content ids only), for fail-open."""
        progs = self._placements_for(ctx.site, ctx.locale)
        out: list[PlacementDecision] = []
        ttl = FALLBACK_TTL
        if not placements:
            page = self.page_for(ctx.site, ctx.path)
            placements = page.placements if page is not None else ()
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
            unknown_site=ctx.site not in self._known_sites,
        )


class Programs(Mapping[str, Program]):
    """One (site, locale)'s placements, each compiled on its first `get` (`Engine.program`):
    reads like the dict of compiled programs it stands for."""

    __slots__ = ("_done", "_engine", "_placements")

    def __init__(self, engine: Engine | None, placements: dict[str, Placement]) -> None:
        self._engine = engine
        self._placements = placements
        self._done: dict[str, Program] = {}

    def get(self, name: str, default: None = None) -> Program | None:  # type: ignore[override]
        prog = self._done.get(name)
        if prog is None and self._engine is not None:
            p = self._placements.get(name)
            if p is None:
                return None
            prog = self._done[name] = self._engine.program(p)
        return prog

    def __getitem__(self, name: str) -> Program:
        prog = self.get(name)
        if prog is None:
            raise KeyError(name)
        return prog

    def __contains__(self, name: object) -> bool:
        return name in self._placements

    def __iter__(self) -> Iterator[str]:
        return iter(self._placements)

    def __len__(self) -> int:
        return len(self._placements)

    def __bool__(self) -> bool:
        return bool(self._placements)

    def compile_all(self) -> None:
        for name in self._placements:
            self.get(name)


_NO_PROGRAMS = Programs(None, {})


# The `X-Edge-Key` of a decision with no placements (a page the rules give none): one cache copy.
NO_PLACEMENTS_KEY = "none"


def _unplaced(ctx: Context) -> str:
    if ctx.path is None:
        return "no_uri"
    if split_path(ctx.path) is None:
        return "bad_uri"
    return "no_page"


# Up to this many distinct placements, a rule set compiles whole when it activates (a few ms per
# placement): no request pays for a compile, nor risks its time budget on one. Above, each
# placement compiles on its first use (the seed's 20 sites × 1 000 placements: ~2 000 distinct).
EAGER_MAX = 500


def compile_ruleset(ruleset: RuleSet, *, eager: bool | None = None) -> Engine:
    """Compile a checked rule set (from `rules.load`) into an Engine: all its placements now
    (`eager`), or each on its first use; by default eagerly up to `EAGER_MAX` distinct ones."""
    if eager is None:
        eager = _distinct_at_most(ruleset, EAGER_MAX)
    return Engine(ruleset, eager=eager)


def _distinct_at_most(ruleset: RuleSet, limit: int) -> bool:
    """Whether the rule set has at most `limit` distinct placements (stops counting past it)."""
    seen: set[tuple[object, ...]] = set()
    for per in ruleset.table.values():
        for p in per.values():
            seen.add((p.name, id(p.default), *(id(r) for r in p.rules)))
            if len(seen) > limit:
                return False
    return True
