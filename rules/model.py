"""The rules file, read: its structure checked and resolved into per-site placements.

Reading never stops at the first problem: every mistake becomes a Diagnostic at its position.
Inheritance: placements under the site `default` apply to every site; a site (and a locale of a
site, under `locales:`) overrides a placement field by field — `strategy`, `default`, `ttl` and
`rules` replace what they inherit, `prepend`/`append` add rules before/after the inherited ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rules import ast, fold
from rules import types as T
from rules.checker import ExprChecker, Problem
from rules.diagnostics import Diagnostic, Severity, suggestion_for
from rules.lexer import SyntaxProblem
from rules.loader import Node, ScalarOrigin, load_text
from rules.parser import parse
from rules.schema import Attribute, ProfileSchema
from rules.source import Source

STRATEGIES = ("first_match", "score_sorted")
EXPERIMENT_STRATEGIES = ("fixed", "thompson")
RANK_KEYS = ("priority", "affinity", "recency")
EXCLUDE_KEYS = ("views", "purchases", "cart")
WEBHOOK_METHODS = ("GET", "POST", "PUT", "PATCH")
MAX_PICK = 100
DEFAULT_TTL = 300


@dataclass(slots=True, eq=False)
class Expr:
    text: str
    origin: ScalarOrigin
    tree: ast.Node
    type: T.Type
    line: int


@dataclass(slots=True, eq=False)
class PickSpec:
    """A content pick: a query over the content indexes (never a scan)."""

    ids: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    any_tags: tuple[str, ...] = ()
    type: str | None = None
    placement: str | None = None  # "" means "the placement being decided"
    locale: str = "ctx"  # "ctx": the request's locale (or items without one); "any"; or a locale
    rank: tuple[tuple[str, float], ...] = (("priority", 1.0),)
    exclude: tuple[str, ...] = ("views", "purchases")
    limit: int = 1

    def per_visitor(self) -> bool:
        """Whether the picked ids can differ between visitors at the same time and place."""
        if self.ids or not (self.tags or self.any_tags or self.type or self.placement is not None):
            return False
        return bool(self.exclude) or any(k == "affinity" and w != 0 for k, w in self.rank)

    def identity(self) -> tuple[object, ...]:
        return (
            self.ids,
            self.tags,
            self.any_tags,
            self.type,
            self.placement,
            self.locale,
            self.rank,
            self.exclude,
            self.limit,
        )


@dataclass(slots=True, eq=False)
class Outcome:
    variant: str
    content: PickSpec | None = None
    ttl: int | None = None


@dataclass(slots=True, eq=False)
class Rule:
    id: str
    when: Expr | None
    then: Outcome
    score: Expr | None
    line: int
    col: int
    always: bool | None = None  # True/False when `when` is constant (folded once), else None


@dataclass(slots=True, eq=False)
class PlacementDef:
    name: str
    node: Node
    strategy: str | None = None
    default: Outcome | None = None
    ttl: int | None = None
    rules: list[Rule] | None = None
    prepend: list[Rule] = field(default_factory=list)
    append: list[Rule] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class Arm:
    name: str
    weight: float
    variant: str | None = None
    content: PickSpec | None = None


@dataclass(slots=True, eq=False)
class Experiment:
    id: str
    salt: str
    placement: str
    rule: str | None
    holdout: float
    arms: list[Arm]
    sites: frozenset[str] | None
    line: int
    # "fixed": the declared weights; "thompson": weights from live click/conversion counts.
    strategy: str = "fixed"
    # thompson only: each arm keeps at least this share of traffic.
    exploration: float = 0.05


@dataclass(slots=True, eq=False)
class Action:
    id: str
    when: Expr | None
    priority: float
    webhook_url: str | None
    webhook_method: str | None
    sites: frozenset[str] | None
    line: int


@dataclass(slots=True, eq=False)
class Placement:
    """One placement as a request at (site, locale) sees it, inheritance applied."""

    name: str
    site: str
    locale: str | None
    strategy: str
    default: Outcome
    rules: list[Rule]
    ttl: int
    experiments: list[Experiment]
    line: int


@dataclass(slots=True, eq=False)
class Site:
    name: str
    node: Node
    placements: dict[str, PlacementDef] = field(default_factory=dict)
    locales: dict[str, dict[str, PlacementDef]] = field(default_factory=dict)
    locale: str | None = None  # the site's language, for content picks when the request has none


@dataclass(slots=True, eq=False)
class RuleSet:
    """A checked rules file, ready for `compile_ruleset`."""

    source: Source
    schema: ProfileSchema
    segments: dict[str, Expr]  # in dependency order: a segment comes after those it uses
    sites: dict[str, Site]
    table: dict[tuple[str, str | None], dict[str, Placement]]
    experiments: list[Experiment]
    actions: list[Action]
    default_ttl: int
    warnings: list[Diagnostic] = field(default_factory=list)

    @property
    def filename(self) -> str:
        return self.source.filename

    def placement_names(self) -> set[str]:
        return {name for per in self.table.values() for name in per}


class Reader:
    def __init__(self, source: Source) -> None:
        self.source = source
        self.diags: list[Diagnostic] = []
        self.schema = ProfileSchema()
        self.checker: ExprChecker | None = None
        self._memo: dict[
            tuple[int, str], SyntaxProblem | tuple[ast.Node, T.Type, list[Problem]]
        ] = {}

    # -- diagnostics ------------------------------------------------------------------------

    def report(
        self,
        line: int,
        col: int,
        end_col: int,
        code: str,
        message: str,
        suggestion: str | None = None,
        severity: Severity = "error",
    ) -> None:
        self.diags.append(
            Diagnostic(
                file=self.source.filename,
                line=line,
                col=col,
                end_col=max(end_col, col + 1),
                severity=severity,
                code=code,
                message=message,
                suggestion=suggestion,
                source_line=self.source.line_text(line),
            )
        )

    def err(
        self,
        node: Node,
        code: str,
        message: str,
        suggestion: str | None = None,
        severity: Severity = "error",
    ) -> None:
        end_line, end_col = self.source.position(node.end)
        if end_line != node.line:
            end_col = len(self.source.line_text(node.line)) + 1
        self.report(node.line, node.col, end_col, code, message, suggestion, severity)

    # -- shapes -----------------------------------------------------------------------------

    def mapping(self, node: Node | None, what: str) -> Node | None:
        if node is None:
            return None
        if node.kind != "map":
            if node.kind == "scalar" and node.value is None and not node.text:
                return None  # an empty section (`segments:` with nothing under it)
            self.err(node, "bad-value", f"{what} must be a mapping of names to values")
            return None
        return node

    def sequence(self, node: Node | None, what: str) -> list[Node]:
        if node is None or (node.kind == "scalar" and node.value is None and not node.text):
            return []
        if node.kind != "list":
            self.err(node, "bad-value", f"{what} must be a list")
            return []
        return node.items

    def keys(self, node: Node, allowed: tuple[str, ...], what: str) -> None:
        for name, (key, _) in node.entries.items():
            if name not in allowed:
                self.err(
                    key,
                    "unknown-field",
                    f"unknown field `{name}` in {what}",
                    suggestion_for(name, allowed) or f"expected one of: {', '.join(allowed)}",
                )

    def check_text(self, node: Node, text: str) -> bool:
        for ch in text:
            o = ord(ch)
            if o < 0x20 or 0x7F <= o < 0xA0:
                self.err(node, "control-char", f"control character U+{o:04X} in `{text!r}`")
                return False
        return True

    def string(
        self, node: Node | None, what: str, required: bool = False, parent: Node | None = None
    ) -> str | None:
        if node is None:
            if required and parent is not None:
                self.err(parent, "missing-field", f"{what} is required")
            return None
        if (
            node.kind != "scalar"
            or node.value is None
            or (isinstance(node.value, bool) and not node.text)
        ):
            self.err(node, "bad-value", f"{what} must be a text value")
            return None
        text = node.text  # the text as written: YAML 1.1 would turn `NO` or `on` into booleans
        if not text:
            self.err(node, "bad-value", f"{what} must not be empty")
            return None
        if not self.check_text(node, text):
            return None
        return text

    def number(self, node: Node | None, what: str, lo: float, hi: float) -> float | None:
        if node is None:
            return None
        v = node.value
        if node.kind != "scalar" or isinstance(v, bool) or not isinstance(v, int | float):
            self.err(node, "bad-value", f"{what} must be a number")
            return None
        if not (lo <= v <= hi) or math.isnan(v):
            self.err(node, "bad-value", f"{what} must be between {lo:g} and {hi:g}, not {v}")
            return None
        return float(v)

    def integer(self, node: Node | None, what: str, lo: int, hi: int) -> int | None:
        if node is None:
            return None
        v = node.value
        if node.kind != "scalar" or isinstance(v, bool) or not isinstance(v, int):
            self.err(node, "bad-value", f"{what} must be a whole number")
            return None
        if not lo <= v <= hi:
            self.err(node, "bad-value", f"{what} must be between {lo} and {hi}, not {v}")
            return None
        return v

    def strings(self, node: Node | None, what: str) -> tuple[str, ...]:
        if node is not None and node.kind == "scalar" and node.value is not None:
            one = self.string(node, what)
            return (one,) if one else ()
        out = []
        for item in self.sequence(node, what):
            s = self.string(item, f"each of {what}")
            if s is not None:
                out.append(s)
        return tuple(out)

    # -- expressions ------------------------------------------------------------------------

    def expression(self, node: Node | None, what: str, want: T.Type | None = None) -> Expr | None:
        if node is None:
            return None
        if node.kind != "scalar" or node.value is None:
            self.err(node, "bad-value", f"{what} must be an expression written as text")
            return None
        if isinstance(node.value, bool):
            text = "true" if node.value else "false"
        else:
            text = str(node.value) if not isinstance(node.value, str) else node.value
        origin = ScalarOrigin(self.source, node, text)
        checker = self.checker
        if checker is None:  # pragma: no cover - set before any expression is read
            return None
        # Large files repeat the same conditions across sites and placements: parse and check
        # each distinct text once (the checked tree is immutable and can be shared).
        memo_key = (id(checker), text)
        hit = self._memo.get(memo_key)
        if hit is None:
            try:
                tree = parse(text)
            except SyntaxProblem as p:
                hit = p
            else:
                hit = checker.check(tree, text)
            self._memo[memo_key] = hit
        if isinstance(hit, SyntaxProblem):
            self.expr_report(origin, hit.start, hit.end, hit.code, hit.message, None)
            return None
        checked, typ, problems = hit
        for pr in problems:
            self.expr_report(origin, pr.start, pr.end, pr.code, pr.message, pr.suggestion)
        if problems:
            return None
        if want is not None and want.kind == "bool" and typ.kind not in ("bool", "any"):
            self.expr_report(
                origin,
                0,
                len(text),
                "type-mismatch",
                f"{what} must be true or false, but this is a {typ}",
                'compare it with something, e.g. `… > 0` or `… == "x"`',
            )
            return None
        if want is not None and want.kind == "number" and not T.is_numeric(typ):
            self.expr_report(
                origin, 0, len(text), "type-mismatch", f"{what} must be a number, not a {typ}", None
            )
            return None
        return Expr(text, origin, checked, typ, node.line)

    def expr_report(
        self,
        origin: ScalarOrigin,
        start: int,
        end: int,
        code: str,
        message: str,
        suggestion: str | None,
    ) -> None:
        line, col = origin.position(start)
        end_line, end_col = origin.position(max(start, end - 1))
        end_col = end_col + 1 if end_line == line else len(self.source.line_text(line)) + 1
        self.report(line, col, end_col, code, message, suggestion)

    # -- sections ---------------------------------------------------------------------------

    def read_schema(self, node: Node | None) -> None:
        m = self.mapping(node, "`schema`")
        if m is None:
            return
        self.keys(m, ("attributes", "interests", "counters", "segments"), "`schema`")
        attrs = self.mapping(m.get("attributes"), "`schema.attributes`")
        if attrs is not None:
            for name, (key, spec) in attrs.entries.items():
                if not name.isidentifier():
                    self.err(key, "bad-value", f"attribute name `{name}` must be a plain name")
                    continue
                type_node = spec
                values: tuple[str | int | float, ...] | None = None
                if spec.kind == "map":
                    self.keys(spec, ("type", "values"), f"attribute `{name}`")
                    given = spec.get("type")
                    if given is None:
                        self.err(spec, "missing-field", f"attribute `{name}` needs a `type`")
                        continue
                    type_node = given
                    vnode = spec.get("values")
                    if vnode is not None:
                        vals: list[str | int | float] = []
                        for item in self.sequence(vnode, "`values`"):
                            v = item.value
                            if isinstance(v, bool) or v is None or not isinstance(v, int | float):
                                text = self.string(item, "an enum value")
                                if text is not None:
                                    vals.append(text)
                            else:
                                vals.append(v)
                        values = tuple(vals)
                tname = type_node.text if type_node.kind == "scalar" else ""
                typ = T.DECLARABLE.get(tname)
                if typ is None:
                    self.err(
                        type_node,
                        "bad-value",
                        f"unknown type `{tname}` for attribute `{name}`",
                        suggestion_for(tname, T.DECLARABLE)
                        or "types: string, int, number, bool, list, timestamp",
                    )
                    continue
                self.schema.attributes[name] = Attribute(name, typ, values)
        for section in ("interests", "counters", "segments"):
            sub = m.get(section)
            if sub is not None:
                names = frozenset(self.strings(sub, f"`schema.{section}`"))
                if section == "interests":
                    self.schema.interests = names
                elif section == "counters":
                    self.schema.counters = names
                else:
                    self.schema.upstream_segments = names

    def read_segments(self, node: Node | None) -> dict[str, Expr]:
        m = self.mapping(node, "`segments`")
        if m is None:
            return {}
        self.checker = ExprChecker(self.schema, m.entries)
        exprs: dict[str, Expr] = {}
        deps: dict[str, set[str]] = {}
        keys: dict[str, Node] = {}
        for name, (key, value) in m.entries.items():
            keys[name] = key
            if not name.isidentifier():
                self.err(
                    key,
                    "bad-value",
                    f"segment name `{name}` must be a plain name (letters, digits, _)",
                )
                continue
            e = self.expression(value, f"segment `{name}`", T.BOOL)
            if e is not None:
                exprs[name] = e
                deps[name] = {
                    n.key
                    for n in ast.walk(e.tree)
                    if isinstance(n, ast.Ref) and n.kind == "segment" and n.key is not None
                }
        # Cycles: depth-first search, reporting each cycle once at the segment that closes it.
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
                    self.err(
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

    def pick(self, node: Node | None, what: str) -> PickSpec | None:
        if node is None:
            return None
        if node.kind == "list":
            return PickSpec(ids=self.strings(node, f"{what} ids"), limit=len(node.items) or 1)
        m = self.mapping(node, what)
        if m is None:
            return None
        self.keys(
            m,
            ("ids", "tags", "any_tags", "type", "placement", "locale", "rank", "exclude", "limit"),
            what,
        )
        spec = PickSpec()
        spec.ids = self.strings(m.get("ids"), "`ids`")
        spec.tags = self.strings(m.get("tags"), "`tags`")
        spec.any_tags = self.strings(m.get("any_tags"), "`any_tags`")
        spec.type = self.string(m.get("type"), "`type`")
        pnode = m.get("placement")
        if pnode is not None:
            if pnode.value is True:
                spec.placement = ""
            else:
                spec.placement = self.string(pnode, "`placement`")
        lnode = m.get("locale")
        if lnode is not None:
            spec.locale = self.string(lnode, "`locale`") or "ctx"
        limit = self.integer(m.get("limit"), "`limit`", 1, MAX_PICK)
        spec.limit = limit if limit is not None else (len(spec.ids) or 1)
        rnode = m.get("rank")
        if rnode is not None:
            rank: list[tuple[str, float]] = []
            if rnode.kind == "map":
                for key, (knode, wnode) in rnode.entries.items():
                    w = self.number(wnode, f"weight of `{key}`", -1e6, 1e6)
                    if key not in RANK_KEYS:
                        self.err(
                            knode,
                            "unknown-field",
                            f"unknown ranking `{key}`",
                            suggestion_for(key, RANK_KEYS),
                        )
                    elif w is not None:
                        rank.append((key, w))
            else:
                for item in self.sequence(rnode, "`rank`"):
                    key_s = self.string(item, "a ranking")
                    if key_s is not None and key_s not in RANK_KEYS:
                        self.err(
                            item,
                            "unknown-field",
                            f"unknown ranking `{key_s}`",
                            suggestion_for(key_s, RANK_KEYS),
                        )
                    elif key_s is not None:
                        rank.append((key_s, 1.0))
            spec.rank = tuple(rank)
        enode = m.get("exclude")
        if enode is not None:
            nodes = (
                [enode]
                if enode.kind == "scalar" and enode.text
                else self.sequence(enode, "`exclude`")
            )
            excl: list[str] = []
            for item_node in nodes:
                name = self.string(item_node, "each of `exclude`")
                if name is None:
                    continue
                if name not in EXCLUDE_KEYS:
                    self.err(
                        item_node,
                        "unknown-field",
                        f"cannot exclude `{name}`",
                        suggestion_for(name, EXCLUDE_KEYS) or f"one of {', '.join(EXCLUDE_KEYS)}",
                    )
                else:
                    excl.append(name)
            spec.exclude = tuple(excl)
        if not (spec.ids or spec.tags or spec.any_tags or spec.type or spec.placement is not None):
            self.err(
                m,
                "bad-pick",
                f"{what} needs `ids`, or at least one of `tags`, `any_tags`, `type`, `placement`",
                "a pick filters the content indexes; it never scans the whole catalogue",
            )
            return None
        return spec

    def outcome(self, node: Node | None, what: str, parent: Node) -> Outcome | None:
        if node is None:
            self.err(parent, "missing-field", f"{what} is required")
            return None
        if node.kind == "scalar":
            variant = self.string(node, f"{what} variant")
            return Outcome(variant) if variant else None
        m = self.mapping(node, what)
        if m is None:
            return None
        self.keys(m, ("variant", "content", "ttl"), what)
        variant = self.string(m.get("variant"), f"`variant` of {what}", required=True, parent=m)
        content = self.pick(m.get("content"), f"the content pick of {what}")
        ttl = self.integer(m.get("ttl"), "`ttl`", 0, 86400 * 365)
        if variant is None:
            return None
        return Outcome(variant, content, ttl)

    def rules_list(self, node: Node | None, where: str) -> list[Rule]:
        out: list[Rule] = []
        for item in self.sequence(node, f"the rules of {where}"):
            m = self.mapping(item, "a rule")
            if m is None:
                continue
            self.keys(m, ("id", "when", "then", "score"), "a rule")
            rid = self.string(m.get("id"), "the rule's `id`", required=True, parent=m)
            when = self.expression(m.get("when"), f"`when` of rule `{rid}`", T.BOOL)
            if m.get("when") is not None and when is None:
                continue
            score = self.expression(m.get("score"), f"`score` of rule `{rid}`", T.NUMBER)
            then = self.outcome(m.get("then"), f"`then` of rule `{rid}`", m)
            if rid is None or then is None:
                continue
            always: bool | None = True
            if when is not None:
                ok, value = fold.constant(when.tree)
                always = (value is True) if ok else None
            out.append(Rule(rid, when, then, score, m.line, m.col, always))
        return out

    def placement_def(self, name: str, node: Node, where: str) -> PlacementDef | None:
        m = self.mapping(node, f"placement `{name}`")
        if m is None:
            return None
        self.keys(
            m, ("strategy", "default", "ttl", "rules", "prepend", "append"), f"placement `{name}`"
        )
        pd = PlacementDef(name, m)
        snode = m.get("strategy")
        if snode is not None:
            s = self.string(snode, "`strategy`")
            if s is not None and s not in STRATEGIES:
                self.err(
                    snode,
                    "bad-value",
                    f"unknown strategy `{s}`",
                    suggestion_for(s, STRATEGIES) or f"one of {', '.join(STRATEGIES)}",
                )
            elif s is not None:
                pd.strategy = s
        if m.get("default") is not None:
            pd.default = self.outcome(m.get("default"), f"the default of `{name}`", m)
        pd.ttl = self.integer(m.get("ttl"), "`ttl`", 0, 86400 * 365)
        if m.get("rules") is not None:
            pd.rules = self.rules_list(m.get("rules"), f"`{name}` ({where})")
        pd.prepend = self.rules_list(m.get("prepend"), f"`{name}` ({where})")
        pd.append = self.rules_list(m.get("append"), f"`{name}` ({where})")
        return pd

    def placements_map(self, node: Node | None, where: str) -> dict[str, PlacementDef]:
        m = self.mapping(node, f"the placements of {where}")
        out: dict[str, PlacementDef] = {}
        if m is None:
            return out
        for name, (_, value) in m.entries.items():
            pd = self.placement_def(name, value, where)
            if pd is not None:
                out[name] = pd
        return out

    def read_sites(self, node: Node | None, root: Node) -> dict[str, Site]:
        m = self.mapping(node, "`sites`")
        if m is None:
            self.err(root, "missing-field", "the file declares no `sites` (and so no placements)")
            return {}
        sites: dict[str, Site] = {}
        for name, (_, value) in m.entries.items():
            sm = self.mapping(value, f"site `{name}`")
            if sm is None:
                continue
            self.keys(sm, ("locale", "placements", "locales"), f"site `{name}`")
            site = Site(name, sm, self.placements_map(sm.get("placements"), f"site `{name}`"))
            site.locale = self.string(sm.get("locale"), "`locale`")
            lm = self.mapping(sm.get("locales"), "`locales`")
            if lm is not None:
                for loc, (_, lval) in lm.entries.items():
                    lmm = self.mapping(lval, f"locale `{loc}`")
                    if lmm is None:
                        continue
                    self.keys(lmm, ("placements",), f"locale `{loc}`")
                    site.locales[loc] = self.placements_map(
                        lmm.get("placements"), f"`{name}` in `{loc}`"
                    )
            sites[name] = site
        return sites

    def resolve(
        self, sites: dict[str, Site], default_ttl: int
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
                    p = self.resolve_one(
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

    def resolve_one(
        self,
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
                self.err(
                    last.node,
                    "missing-field",
                    f"placement `{name}` has no `default` (site `{site}`)",
                    "every placement needs a default: what visitors get when no rule matches, "
                    "and the fail-open answer",
                )
            return None
        seen: dict[str, Rule] = {}
        for r in rules:
            if r.id in seen and id(r) not in reported:
                reported.add(id(r))
                first = seen[r.id]
                self.report(
                    r.line,
                    r.col,
                    r.col + 1,
                    "duplicate-id",
                    f"rule id `{r.id}` is used twice in placement `{name}` "
                    f"(first at line {first.line})",
                    "give every rule of a placement its own id",
                )
            seen.setdefault(r.id, r)
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

    def read_experiments(
        self,
        node: Node | None,
        table: dict[tuple[str, str | None], dict[str, Placement]],
        sites: dict[str, Site],
    ) -> list[Experiment]:
        out: list[Experiment] = []
        ids: dict[str, Node] = {}
        all_placements = {n: p for per in table.values() for n, p in per.items()}
        for item in self.sequence(node, "`experiments`"):
            m = self.mapping(item, "an experiment")
            if m is None:
                continue
            self.keys(
                m,
                (
                    "id",
                    "salt",
                    "placement",
                    "rule",
                    "holdout",
                    "arms",
                    "sites",
                    "strategy",
                    "exploration",
                ),
                "an experiment",
            )
            eid = self.string(m.get("id"), "the experiment's `id`", required=True, parent=m)
            if eid is not None and eid in ids:
                self.err(
                    m.entries["id"][1],
                    "duplicate-id",
                    f"experiment id `{eid}` is used twice (first at line {ids[eid].line})",
                )
                continue
            if eid is not None:
                ids[eid] = m
            salt = self.string(m.get("salt"), "`salt`", required=True, parent=m)
            pname = self.string(m.get("placement"), "`placement`", required=True, parent=m)
            pnode = m.get("placement")
            if pname is not None and pnode is not None and pname not in all_placements:
                self.err(
                    pnode,
                    "unknown-placement",
                    f"unknown placement `{pname}`",
                    suggestion_for(pname, all_placements),
                )
                pname = None
            rule = self.string(m.get("rule"), "`rule`")
            rnode = m.get("rule")
            if rule is not None and pname is not None and rnode is not None:
                rule_ids = {
                    r.id for per in table.values() if pname in per for r in per[pname].rules
                }
                if rule not in rule_ids:
                    self.err(
                        rnode,
                        "unknown-rule",
                        f"placement `{pname}` has no rule `{rule}`",
                        suggestion_for(rule, rule_ids),
                    )
                    rule = None
                    pname = None
            holdout = self.number(m.get("holdout"), "`holdout`", 0.0, 0.99) or 0.0
            strategy = self.string(m.get("strategy"), "`strategy`") or "fixed"
            if strategy not in EXPERIMENT_STRATEGIES:
                self.err(
                    m.get("strategy") or m,
                    "bad-value",
                    f"unknown experiment strategy `{strategy}`",
                    suggestion_for(strategy, EXPERIMENT_STRATEGIES),
                )
                strategy = "fixed"
            exploration = self.number(m.get("exploration"), "`exploration`", 0.0, 0.5)
            site_names = self.strings(m.get("sites"), "`sites`")
            for s in site_names:
                if s not in sites:
                    self.err(
                        m.get("sites") or m,
                        "unknown-site",
                        f"unknown site `{s}`",
                        suggestion_for(s, sites),
                    )
            arms: list[Arm] = []
            arm_names: set[str] = set()
            arms_node = m.get("arms")
            for a in self.sequence(arms_node, "`arms`"):
                am = self.mapping(a, "an arm")
                if am is None:
                    continue
                self.keys(am, ("name", "weight", "variant", "content"), "an arm")
                aname = self.string(am.get("name"), "the arm's `name`", required=True, parent=am)
                weight = self.number(am.get("weight"), "`weight`", 0.0, 1.0)
                if am.get("weight") is None:
                    self.err(
                        am, "missing-field", "an arm needs a `weight` (a share between 0 and 1)"
                    )
                if aname is not None and aname in arm_names:
                    self.err(am, "duplicate-id", f"arm `{aname}` is declared twice")
                    continue
                if aname is None or weight is None:
                    continue
                arm_names.add(aname)
                variant = self.string(am.get("variant"), "`variant`")
                content = self.pick(am.get("content"), f"the content of arm `{aname}`")
                arms.append(Arm(aname, weight, variant, content))
            if arms_node is None:
                self.err(m, "missing-field", "an experiment needs `arms`")
            elif len(arms) < 2 and len(self.sequence(arms_node, "`arms`")) < 2:
                self.err(arms_node, "bad-value", "an experiment needs at least two arms")
            total = sum(a.weight for a in arms)
            if (
                arms
                and abs(total - 1.0) > 1e-6
                and len(arms) == len(self.sequence(arms_node, "`arms`"))
            ):
                self.err(
                    arms_node if arms_node is not None else m,
                    "weights",
                    f"arm weights of `{eid}` sum to {total:g}; they must sum to 1",
                    "weights are shares: e.g. 0.5 and 0.5, or 0.2, 0.3 and 0.5",
                )
                continue
            if eid is None or salt is None or pname is None or len(arms) < 2:
                continue
            out.append(
                Experiment(
                    eid,
                    salt,
                    pname,
                    rule,
                    holdout,
                    arms,
                    frozenset(site_names) or None,
                    m.line,
                    strategy,
                    0.05 if exploration is None else exploration,
                )
            )
        return out

    def read_actions(self, node: Node | None, sites: dict[str, Site]) -> list[Action]:
        out: list[Action] = []
        ids: dict[str, Node] = {}
        for item in self.sequence(node, "`actions`"):
            m = self.mapping(item, "an action")
            if m is None:
                continue
            self.keys(m, ("id", "when", "priority", "webhook", "sites"), "an action")
            aid = self.string(m.get("id"), "the action's `id`", required=True, parent=m)
            if aid is not None and aid in ids:
                self.err(
                    m.entries["id"][1],
                    "duplicate-id",
                    f"action id `{aid}` is used twice (first at line {ids[aid].line})",
                )
                continue
            when = self.expression(m.get("when"), f"`when` of action `{aid}`", T.BOOL)
            if m.get("when") is not None and when is None:
                continue
            priority = self.number(m.get("priority"), "`priority`", -1e9, 1e9) or 0.0
            url = method = None
            wnode = self.mapping(m.get("webhook"), "`webhook`")
            if wnode is not None:
                self.keys(wnode, ("url", "method"), "`webhook`")
                url = self.string(wnode.get("url"), "`url`", required=True, parent=wnode)
                if url is not None and not url.startswith(("https://", "http://")):
                    self.err(
                        wnode.get("url") or wnode,
                        "bad-value",
                        "a webhook `url` must start with https:// or http://",
                    )
                    url = None
                method = (self.string(wnode.get("method"), "`method`") or "POST").upper()
                if method not in WEBHOOK_METHODS:
                    self.err(
                        wnode.get("method") or wnode,
                        "bad-value",
                        f"unsupported method `{method}`",
                        suggestion_for(method, WEBHOOK_METHODS),
                    )
                    method = "POST"
            site_names = self.strings(m.get("sites"), "`sites`")
            for s in site_names:
                if s not in sites:
                    self.err(
                        m.get("sites") or m,
                        "unknown-site",
                        f"unknown site `{s}`",
                        suggestion_for(s, sites),
                    )
            if aid is None:
                continue
            ids[aid] = m
            out.append(
                Action(
                    aid,
                    when,
                    priority,
                    url,
                    method if url else None,
                    frozenset(site_names) or None,
                    m.line,
                )
            )
        return out

    def read(self, root: Node) -> RuleSet | None:
        if root.kind != "map":
            self.err(
                root, "bad-value", "a rules file is a mapping with `schema`, `segments`, `sites`, …"
            )
            return None
        self.keys(
            root,
            ("version", "defaults", "schema", "segments", "sites", "experiments", "actions"),
            "the rules file",
        )
        default_ttl = DEFAULT_TTL
        dm = self.mapping(root.get("defaults"), "`defaults`")
        if dm is not None:
            self.keys(dm, ("ttl",), "`defaults`")
            ttl = self.integer(dm.get("ttl"), "`ttl`", 0, 86400 * 365)
            default_ttl = ttl if ttl is not None else DEFAULT_TTL
        self.read_schema(root.get("schema"))
        self.checker = ExprChecker(self.schema, ())
        segments = self.read_segments(root.get("segments"))
        sites = self.read_sites(root.get("sites"), root)
        table = self.resolve(sites, default_ttl)
        experiments = self.read_experiments(root.get("experiments"), table, sites)
        for per in table.values():
            for p in per.values():
                p.experiments = [
                    e
                    for e in experiments
                    if e.placement == p.name and (e.sites is None or p.site in e.sites)
                ]
        actions = self.read_actions(root.get("actions"), sites)
        return RuleSet(
            self.source, self.schema, segments, sites, table, experiments, actions, default_ttl
        )


def read(text: str, filename: str) -> tuple[RuleSet | None, list[Diagnostic], set[str]]:
    """Parse and check a rules file; returns the rule set (None on errors), the diagnostics and
    the segments used by some expression."""
    loaded = load_text(text, filename)
    if loaded.root is None:
        return None, loaded.diagnostics, set()
    reader = Reader(loaded.source)
    reader.diags.extend(loaded.diagnostics)
    ruleset = reader.read(loaded.root)
    used = set(reader.checker.used_segments) if reader.checker is not None else set()
    return ruleset, reader.diags, used
