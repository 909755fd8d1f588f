"""`sites:` — per site (and locale) the placements, their rules, outcomes and defaults, as
written: one layer each (inheritance is `rules.resolve`'s)."""

from __future__ import annotations

from rules import types as T
from rules.diagnostics import suggestion_for
from rules.loader import Node
from rules.model import Outcome, PlacementDef, Rule, Site
from rules.read.base import Reader
from rules.read.pages import read_pages
from rules.read.picks import read_pick

STRATEGIES = ("first_match", "score_sorted")


def read_outcome(r: Reader, node: Node | None, what: str, parent: Node) -> Outcome | None:
    if node is None:
        r.err(parent, "missing-field", f"{what} is required")
        return None
    if node.kind == "scalar":
        variant = r.string(node, f"{what} variant")
        return Outcome(variant) if variant else None
    m = r.mapping(node, what)
    if m is None:
        return None
    r.keys(m, ("variant", "content", "ttl"), what)
    variant = r.string(m.get("variant"), f"`variant` of {what}", required=True, parent=m)
    content = read_pick(r, m.get("content"), f"the content pick of {what}")
    ttl = r.integer(m.get("ttl"), "`ttl`", 0, 86400 * 365)
    if variant is None:
        return None
    return Outcome(variant, content, ttl)


def read_rules(r: Reader, node: Node | None, where: str) -> list[Rule]:
    out: list[Rule] = []
    for item in r.sequence(node, f"the rules of {where}"):
        m = r.mapping(item, "a rule")
        if m is None:
            continue
        r.keys(m, ("id", "when", "then", "score"), "a rule")
        rid = r.string(m.get("id"), "the rule's `id`", required=True, parent=m)
        when = r.expression(m.get("when"), f"`when` of rule `{rid}`", T.BOOL)
        if m.get("when") is not None and when is None:
            continue
        score = r.expression(m.get("score"), f"`score` of rule `{rid}`", T.NUMBER)
        then = read_outcome(r, m.get("then"), f"`then` of rule `{rid}`", m)
        if rid is None or then is None:
            continue
        # `always` is known once `when` is checked (`rules.resolve`).
        out.append(Rule(rid, when, then, score, m.line, m.col))
    return out


def read_placement(r: Reader, name: str, node: Node, where: str) -> PlacementDef | None:
    m = r.mapping(node, f"placement `{name}`")
    if m is None:
        return None
    r.keys(m, ("strategy", "default", "ttl", "rules", "prepend", "append"), f"placement `{name}`")
    pd = PlacementDef(name, m)
    snode = m.get("strategy")
    if snode is not None:
        s = r.string(snode, "`strategy`")
        if s is not None and s not in STRATEGIES:
            r.err(
                snode,
                "bad-value",
                f"unknown strategy `{s}`",
                suggestion_for(s, STRATEGIES) or f"one of {', '.join(STRATEGIES)}",
            )
        elif s is not None:
            pd.strategy = s
    if m.get("default") is not None:
        pd.default = read_outcome(r, m.get("default"), f"the default of `{name}`", m)
    pd.ttl = r.integer(m.get("ttl"), "`ttl`", 0, 86400 * 365)
    if m.get("rules") is not None:
        pd.rules = read_rules(r, m.get("rules"), f"`{name}` ({where})")
    pd.prepend = read_rules(r, m.get("prepend"), f"`{name}` ({where})")
    pd.append = read_rules(r, m.get("append"), f"`{name}` ({where})")
    return pd


def read_placements(r: Reader, node: Node | None, where: str) -> dict[str, PlacementDef]:
    m = r.mapping(node, f"the placements of {where}")
    out: dict[str, PlacementDef] = {}
    if m is None:
        return out
    for name, (_, value) in m.entries.items():
        pd = read_placement(r, name, value, where)
        if pd is not None:
            out[name] = pd
    return out


def read_sites(r: Reader, node: Node | None, root: Node) -> dict[str, Site]:
    m = r.mapping(node, "`sites`")
    if m is None:
        r.err(root, "missing-field", "the file declares no `sites` (and so no placements)")
        return {}
    sites: dict[str, Site] = {}
    for name, (_, value) in m.entries.items():
        sm = r.mapping(value, f"site `{name}`")
        if sm is None:
            continue
        r.keys(sm, ("locale", "placements", "locales", "pages"), f"site `{name}`")
        site = Site(name, sm, read_placements(r, sm.get("placements"), f"site `{name}`"))
        site.pages = read_pages(r, sm.get("pages"), name)
        site.locale = r.string(sm.get("locale"), "`locale`")
        lm = r.mapping(sm.get("locales"), "`locales`")
        if lm is not None:
            for loc, (_, lval) in lm.entries.items():
                lmm = r.mapping(lval, f"locale `{loc}`")
                if lmm is None:
                    continue
                r.keys(lmm, ("placements",), f"locale `{loc}`")
                site.locales[loc] = read_placements(
                    r, lmm.get("placements"), f"`{name}` in `{loc}`"
                )
        sites[name] = site
    return sites
