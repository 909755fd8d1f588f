"""Static analysis of a checked rule set: unreachable rules, unused segments, cache cardinality."""

from __future__ import annotations

import math

import msgspec

from rules import ast
from rules.diagnostics import Diagnostic
from rules.model import Outcome, Placement, Rule, RuleSet


class SiteCardinality(msgspec.Struct):
    """Upper bound of distinct decision keys for a page showing every placement of a site."""

    site: str
    locale: str | None
    max_keys: int
    per_placement: dict[str, int]
    per_visitor: list[
        str
    ]  # placements whose content pick varies per visitor (affinity, exclusions)


class PageCardinality(msgspec.Struct):
    """Upper bound of distinct decision keys for one page (`pages:`): what a CDN operator
    sizes the cache by — the product over the page's placements, not the site's."""

    site: str
    pattern: str
    line: int
    max_keys: int
    # What makes a placement of the page one answer per visitor: "placement: rule `r` (line n)".
    per_visitor: list[str]
    # Rules of the page's placements reading its template values (`ctx.page.sku`): their answer
    # varies with the URL within the pattern — bounded by `max_keys` per URI, and each URI is a
    # cache entry of its own anyway, but the pattern as a whole has that many per value.
    page_values: list[str] = msgspec.field(default_factory=list)


class Report(msgspec.Struct):
    warnings: list[Diagnostic]
    cardinality: list[SiteCardinality]
    pages: list[PageCardinality] = msgspec.field(default_factory=list)

    @property
    def max_keys(self) -> int:
        return max((c.max_keys for c in self.cardinality), default=1)


def _always(rule: Rule) -> bool | None:
    """True / False when the rule's condition is constant, None when it depends on data."""
    return rule.always


def _warn(
    rs: RuleSet, line: int, col: int, code: str, message: str, suggestion: str | None
) -> Diagnostic:
    text = rs.source.line_text(line)
    return Diagnostic(
        file=rs.filename,
        line=line,
        col=col,
        end_col=max(col + 1, len(text) + 1),
        severity="warning",
        code=code,
        message=message,
        suggestion=suggestion,
        source_line=text,
    )


def reachable_rules(p: Placement) -> list[Rule]:
    if p.strategy != "first_match":
        return [r for r in p.rules if _always(r) is not False]
    out = []
    for r in p.rules:
        always = _always(r)
        if always is False:
            continue
        out.append(r)
        if always:
            break
    return out


def placement_outcomes(p: Placement) -> tuple[int, bool]:
    """(distinct (variant, content, arm) outcomes, whether content varies per visitor)."""
    outcomes: set[tuple[object, ...]] = set()
    per_visitor = False
    reachable = reachable_rules(p)
    chosen: list[tuple[Rule | None, Outcome]] = [(r, r.then) for r in reachable]
    if p.strategy == "score_sorted" or not reachable or _always(reachable[-1]) is not True:
        chosen.append((None, p.default))
    for rule, out in chosen:
        pick_id = out.content.identity() if out.content is not None else None
        per_visitor = per_visitor or (out.content is not None and out.content.per_visitor())
        arms: list[tuple[str | None, str, object]] = [(None, out.variant, pick_id)]
        for e in p.experiments:
            if e.rule is not None and (rule is None or rule.id != e.rule):
                continue
            arms = [
                (a.name, a.variant or out.variant, a.content.identity() if a.content else pick_id)
                for a in e.arms
            ]
            if e.holdout > 0:
                arms.append(("holdout", out.variant, pick_id))
            for a in e.arms:
                per_visitor = per_visitor or (a.content is not None and a.content.per_visitor())
            break
        for arm in arms:
            outcomes.add(arm)
    return len(outcomes), per_visitor


def per_visitor_causes(p: Placement) -> list[str]:
    """The rules (or the default) whose content pick varies per visitor, named for the author."""
    out = [
        f"{p.name}: the pick of rule `{r.id}` (line {r.line})"
        for r in reachable_rules(p)
        if r.then.content is not None and r.then.content.per_visitor()
    ]
    if p.default.content is not None and p.default.content.per_visitor():
        out.append(f"{p.name}: the pick of its default")
    out.extend(
        f"{p.name}: the pick of arm `{a.name}` of experiment `{e.id}`"
        for e in p.experiments
        for a in e.arms
        if a.content is not None and a.content.per_visitor()
    )
    return out


def _pages(rs: RuleSet) -> tuple[list[PageCardinality], list[Diagnostic]]:
    """Per page its cardinality; warnings for a page with no placements and for a placement of a
    site that has pages but is on none of them (no page-only request decides it)."""
    cards: list[PageCardinality] = []
    warnings: list[Diagnostic] = []
    warned: set[int] = set()
    trees: dict[int, list[str]] = {}
    for site, pages in sorted(rs.pages.items()):
        per = rs.table.get((site, None), {})
        on_a_page: set[str] = set()
        for page in pages:
            on_a_page.update(page.placements)
            if page.site != site:
                continue  # inherited: counted at its own site
            n = 1
            causes: list[str] = []
            values: list[str] = []
            for name in page.placements:
                p = per.get(name)
                if p is None:
                    continue
                n *= placement_outcomes(p)[0]
                causes.extend(per_visitor_causes(p))
                values.extend(_page_value_readers(p, trees))
            cards.append(PageCardinality(site, page.pattern, page.line, n, causes, values))
            if not page.placements and id(page) not in warned:
                warned.add(id(page))
                warnings.append(
                    _warn(
                        rs,
                        page.line,
                        page.col,
                        "page-without-placements",
                        f"page `{page.pattern}` names no placements: it is always answered "
                        "`X-Edge-Key: none`",
                        "list its placements, or remove the page",
                    )
                )
        for name, p in sorted(per.items()):
            if name not in on_a_page and p.site == site:
                warnings.append(
                    _warn(
                        rs,
                        p.line,
                        1,
                        "placement-on-no-page",
                        f"placement `{name}` is on no page of site `{site}`: only a request "
                        "naming it (`?p=`, `X-Placements`) decides it",
                        "add it to the `placements:` of a page under `pages:`",
                    )
                )
    return cards, warnings


def _page_value_readers(p: Placement, trees: dict[int, list[str]]) -> list[str]:
    """Each rule of `p` reading `ctx.page.x`: "placement: rule `r` (line n) reads ctx.page.x".
    `trees` remembers each tree's page names: pages share placements, and placements share
    trees (a walk per page and rule was most of `rules check` at the seed's scale)."""
    out: list[str] = []
    for r in p.rules:
        found: set[str] = set()
        for e in (r.when, r.score):
            if e is None or e.tree is None:
                continue
            hit = trees.get(id(e.tree))
            if hit is None:
                hit = trees[id(e.tree)] = [
                    n.key or ""
                    for n in ast.walk(e.tree)
                    if isinstance(n, ast.Ref) and n.kind == "page"
                ]
            found.update(hit)
        names = sorted(found)
        if names:
            reads = ", ".join(f"ctx.page.{n}" for n in names)
            out.append(f"{p.name}: rule `{r.id}` (line {r.line}) reads {reads}")
    return out


def describe_page(c: PageCardinality) -> str:
    line = f"{c.site} {c.pattern}: at most {c.max_keys} decision keys"
    if c.page_values:
        line += " per URI, per value of its template segments (" + "; ".join(c.page_values) + ")"
    if c.per_visitor:
        line += "; one per visitor because of " + "; ".join(c.per_visitor)
    return line


def analyze(rs: RuleSet, used_segments: set[str]) -> Report:
    warnings: list[Diagnostic] = []
    reported: set[int] = set()
    for per in rs.table.values():
        for p in per.values():
            blocker: Rule | None = None
            for r in p.rules:
                if id(r) in reported:
                    if _always(r) is True and p.strategy == "first_match":
                        blocker = blocker or r
                    continue
                always = _always(r)
                if blocker is not None and p.strategy == "first_match":
                    reported.add(id(r))
                    warnings.append(
                        _warn(
                            rs,
                            r.line,
                            r.col,
                            "unreachable",
                            f"rule `{r.id}` of `{p.name}` can never be chosen: rule `{blocker.id}` "
                            f"(line {blocker.line}) always matches before it",
                            "move it above, or give the earlier rule a condition",
                        )
                    )
                    continue
                if always is False:
                    reported.add(id(r))
                    warnings.append(
                        _warn(
                            rs,
                            r.line,
                            r.col,
                            "never-matches",
                            f"rule `{r.id}` never matches: its condition is always false",
                            None,
                        )
                    )
                elif always is True and p.strategy == "first_match":
                    blocker = r
    for name, expr in rs.segments.items():
        if name not in used_segments:
            line = expr.line
            text = rs.source.line_text(line)
            col = max(1, len(text) - len(text.lstrip()) + 1)
            warnings.append(
                _warn(
                    rs,
                    line,
                    col,
                    "unused-segment",
                    f"segment `{name}` is never used by a rule, segment or action",
                    "remove it, or use it as `segment." + name + "`",
                )
            )
    cards: list[SiteCardinality] = []
    for (site, loc), per in sorted(rs.table.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        counts: dict[str, int] = {}
        pv: list[str] = []
        for name, p in sorted(per.items()):
            n, varies = placement_outcomes(p)
            counts[name] = n
            if varies:
                pv.append(name)
        cards.append(
            SiteCardinality(site, loc, math.prod(counts.values()) if counts else 1, counts, pv)
        )
    page_cards, page_warnings = _pages(rs)
    return Report([*warnings, *page_warnings], cards, page_cards)


def describe(c: SiteCardinality) -> str:
    where = c.site + (f" ({c.locale})" if c.locale else "")
    parts = " × ".join(f"{n} {name}" for name, n in c.per_placement.items())
    line = f"{where}: at most {c.max_keys} decision keys per page ({parts})"
    if c.per_visitor:
        line += (
            f"; content of {', '.join(c.per_visitor)} varies per visitor "
            "(ranked by affinity or excluding seen items): up to one key per visitor"
        )
    return line
