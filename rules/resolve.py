"""The `resolve` stage: checked expressions → the rule set the engine compiles.

Segments are put in dependency order (a cycle is an error); rules, scores and actions whose
expressions failed a stage are dropped; placements are resolved per (site, locale) with inheritance
(`rules.model`); experiments are linked to the placements and rules they name.
"""

from __future__ import annotations

from rules import ast, fold
from rules.diagnostics import suggestion_for
from rules.loader import Node
from rules.model import (
    Experiment,
    Expr,
    PageDef,
    Placement,
    PlacementDef,
    Rule,
    RuleSet,
    Site,
)
from rules.pages import ShadowIndex
from rules.read import Draft
from rules.read.base import Reader
from rules.read.experiments import ExperimentRead

Table = dict[tuple[str, str | None], dict[str, Placement]]


def resolve(draft: Draft) -> RuleSet:
    r = Reader(draft.source)
    r.diags = draft.diagnostics  # this stage's problems join the file's
    segments = order_segments(r, draft.segments.exprs, draft.segments.keys)
    for site in draft.sites.values():
        for defs in (site.placements, *site.locales.values()):
            for d in defs.values():
                _settle(d)
    table = resolve_table(r, draft.sites, draft.default_ttl)
    experiments = link_experiments(r, draft.experiments, table)
    for per in table.values():
        for p in per.values():
            p.experiments = [
                e
                for e in experiments
                if e.placement == p.name and (e.sites is None or p.site in e.sites)
            ]
    actions = [a for a in draft.actions if a.when is None or a.when.ok]
    return RuleSet(
        draft.source,
        draft.schema,
        segments,
        draft.sites,
        table,
        experiments,
        actions,
        draft.default_ttl,
        pages=resolve_pages(r, draft.sites, table),
    )


def resolve_pages(r: Reader, sites: dict[str, Site], table: Table) -> dict[str, list[PageDef]]:
    """Each site's pages in matching order — its own, then `default`'s (a site's page overrides
    an inherited one by coming first) — with the placements each names checked against what the
    site has, and a pattern that an earlier one of the same site matches wholly reported (it
    would never match). Each written page is reported once, at its own site."""
    base = sites.get("default")
    out: dict[str, list[PageDef]] = {}
    for sname, site in sites.items():
        placements = table.get((sname, None), {})
        earlier_pages = ShadowIndex()
        for page in site.pages:
            earlier = earlier_pages.covering(page)
            earlier_pages.add(page)
            if earlier is not None:
                r.err(
                    page.node.get("path") or page.node,
                    "shadowed-page",
                    f"`{page.pattern}` never matches: `{earlier.pattern}` (line "
                    f"{earlier.line}) comes first and matches every path it does",
                    "move the more specific pattern above the general one",
                )
            pnode = page.node.get("placements") or page.node
            for name in page.placements:
                if name not in placements:
                    r.err(
                        pnode,
                        "unknown-placement",
                        f"page `{page.pattern}` names placement `{name}`, which site "
                        f"`{sname}` does not have",
                        suggestion_for(name, placements)
                        or "declare it under `placements:` of this site or of `default`",
                    )
        own = list(site.pages)
        if base is not None and site is not base:
            own.extend(base.pages)
        if own:
            out[sname] = own
    return out


def order_segments(r: Reader, exprs: dict[str, Expr], keys: dict[str, Node]) -> dict[str, Expr]:
    """The checked segments, each after those it uses; a cycle is reported once, at the segment
    that closes it, and its segments dropped."""
    deps = {
        name: {
            n.key
            for n in ast.walk(e.tree)
            if isinstance(n, ast.Ref) and n.kind == "segment" and n.key is not None
        }
        for name, e in exprs.items()
        if e.ok
    }
    order: list[str] = []
    state: dict[str, int] = {}
    in_cycle: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        path.append(name)
        for dep in sorted(deps.get(name, ())):
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep]
                in_cycle.update(cycle)
                r.err(
                    keys[dep],
                    "cycle",
                    f"segment `{dep}` depends on itself: {' → '.join(cycle)}",
                    "a segment cannot use itself, directly or through other segments",
                )
            elif state.get(dep) is None and dep in deps:
                visit(dep, path)
        path.pop()
        state[name] = 2
        order.append(name)

    for name in deps:
        if state.get(name) is None:
            visit(name, [])
    return {n: exprs[n] for n in order if n not in in_cycle}


def _settle(d: PlacementDef) -> None:
    """Drops the rules whose condition failed a stage (and scores that did); folds each
    remaining condition once: `always` is True/False when it is constant."""
    for rules in (d.rules, d.prepend, d.append):
        if rules is None:
            continue
        rules[:] = [rule for rule in rules if rule.when is None or rule.when.ok]
        for rule in rules:
            if rule.score is not None and not rule.score.ok:
                rule.score = None
            rule.always = True
            if rule.when is not None:
                ok, value = fold.constant(rule.when.tree)
                rule.always = (value is True) if ok else None


def resolve_table(
    r: Reader, sites: dict[str, Site], default_ttl: int
) -> dict[tuple[str, str | None], dict[str, Placement]]:
    base = sites.get("default")
    table: dict[tuple[str, str | None], dict[str, Placement]] = {}
    base_locales = set(base.locales) if base else set()
    reported: set[int] = set()
    names = sorted(sites) if "default" in sites else ["default", *sorted(sites)]
    for sname in names:
        site = sites.get(sname)
        for loc in [None, *sorted(base_locales | (set(site.locales) if site else set()))]:
            layers: list[dict[str, PlacementDef]] = []
            if base is not None:
                layers.append(base.placements)
                if loc is not None and loc in base.locales:
                    layers.append(base.locales[loc])
            if site is not None and site is not base:
                layers.append(site.placements)
                if loc is not None and loc in site.locales:
                    layers.append(site.locales[loc])
            resolved: dict[str, Placement] = {}
            for pname in sorted({p for layer in layers for p in layer}):
                p = _resolve_one(
                    r,
                    pname,
                    sname,
                    loc,
                    [layer[pname] for layer in layers if pname in layer],
                    default_ttl,
                    reported,
                )
                if p is not None:
                    resolved[pname] = p
            table[(sname, loc)] = resolved
    return table


def _resolve_one(
    r: Reader,
    name: str,
    site: str,
    loc: str | None,
    defs: list[PlacementDef],
    default_ttl: int,
    reported: set[int],
) -> Placement | None:
    strategy, default, ttl = "first_match", None, None
    rules: list[Rule] = []
    for d in defs:
        strategy = d.strategy or strategy
        default = d.default or default
        ttl = d.ttl if d.ttl is not None else ttl
        if d.rules is not None:
            rules = list(d.rules)
        rules = [*d.prepend, *rules, *d.append]
    last = defs[-1]
    if default is None:
        if id(last) not in reported:
            reported.add(id(last))
            r.err(
                last.node,
                "missing-field",
                f"placement `{name}` has no `default` (site `{site}`)",
                "every placement needs a default: what visitors get when no rule matches, "
                "and the fail-open answer",
            )
        return None
    seen: dict[str, Rule] = {}
    for rule in rules:
        if rule.id in seen and id(rule) not in reported:
            reported.add(id(rule))
            first = seen[rule.id]
            r.report(
                rule.line,
                rule.col,
                rule.col + 1,
                "duplicate-id",
                f"rule id `{rule.id}` is used twice in placement `{name}` "
                f"(first at line {first.line})",
                "give every rule of a placement its own id",
            )
        seen.setdefault(rule.id, rule)
    return Placement(
        name,
        site,
        loc,
        strategy,
        default,
        rules,
        ttl if ttl is not None else default_ttl,
        [],
        last.node.line,
    )


def link_experiments(r: Reader, read: list[ExperimentRead], table: Table) -> list[Experiment]:
    """The experiments whose placement (and rule, when they name one) exist."""
    out: list[Experiment] = []
    all_placements = {n for per in table.values() for n in per}
    for e in read:
        pname, pnode = e.placement, e.placement_node
        if pname is not None and pnode is not None and pname not in all_placements:
            r.err(
                pnode,
                "unknown-placement",
                f"unknown placement `{pname}`",
                suggestion_for(pname, all_placements),
            )
            continue
        if e.rule is not None and pname is not None and e.rule_node is not None:
            rule_ids = {
                rule.id for per in table.values() if pname in per for rule in per[pname].rules
            }
            if e.rule not in rule_ids:
                r.err(
                    e.rule_node,
                    "unknown-rule",
                    f"placement `{pname}` has no rule `{e.rule}`",
                    suggestion_for(e.rule, rule_ids),
                )
                continue
        if e.experiment is not None:
            out.append(e.experiment)
    return out
