"""Type-checks an expression against the declared schema and resolves its names.

The checker returns a new tree in which every `profile.…`, `ctx.…`, `segment.…` and `recent.…`
chain is a single `Ref` node, plus the expression's type, plus every problem found (it keeps going
after the first one). Semantics it checks for: a missing attribute is null; comparisons with null
are false; arithmetic with null is null; conditions (`when`, `and`, `or`, `not`) need booleans.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rules import ast
from rules import types as T
from rules.builtins import FUNCTIONS, METHODS, Builtin, Param, accepts, item_noun
from rules.context import FIELDS
from rules.diagnostics import suggestion_for
from rules.schema import PROFILE_BUILTINS, RECENT_FIELDS, ROOTS, ProfileSchema

MAX_REGEX_LENGTH = 200
# `ctx.<name>` names, from the one description of the context (`geo` stands for its fields).
CTX_NAMES = tuple(dict.fromkeys(name.split(".")[0] for name in FIELDS))
GEO_FIELDS = tuple(name[4:] for name in FIELDS if name.startswith("geo."))


def _nested_repeat(pattern: str) -> bool:
    """Whether a repeated group is made only of repeats, as in `(a+)+`, `(\\w+\\s?)*` or
    `(x|y+)+`: the engine can split a run of characters between the inner and outer repeat in
    exponentially many ways, and on a hostile subject (`ctx.path` is the visitor's) no deadline
    can interrupt the search. A group with a character every repetition must match, like
    `(\\.[a-z]+)*`, is linear and allowed; so are atomic groups and possessive repeats
    (`(?>a+)+`, `(a++)+`), which never backtrack."""
    # The standard library's own pattern parser (what `re.compile` runs); private, so untyped.
    C: Any = importlib.import_module("re._constants")
    parser: Any = importlib.import_module("re._parser")

    Items = Iterable[tuple[object, Any]]
    single = (C.LITERAL, C.NOT_LITERAL, C.IN, C.ANY, C.CATEGORY)

    def has_repeat(items: Items) -> bool:
        for op, av in items:
            if op in (C.MAX_REPEAT, C.MIN_REPEAT) and av[1] > 1:
                return True
            if op is C.SUBPATTERN and has_repeat(av[3]):
                return True
            if op is C.BRANCH and any(has_repeat(b) for b in av[1]):
                return True
        return False

    def anchored(items: Items) -> bool:
        """Some character outside any repeat must match in every path through `items`."""
        for op, av in items:
            if op in single:
                return True
            if op is C.SUBPATTERN and anchored(av[3]):
                return True
            if op is C.BRANCH and all(anchored(b) for b in av[1]):
                return True
        return False

    def inner(op: object, av: Any) -> list[Items]:
        if op in (C.MAX_REPEAT, C.MIN_REPEAT):
            return [av[2]]
        if op is C.SUBPATTERN:
            return [av[3]]
        if op is C.BRANCH:
            return list(av[1])
        if op in (C.ASSERT, C.ASSERT_NOT):
            return [av[1]]
        return []

    def risky(items: Items) -> bool:
        for op, av in items:
            repeat = op in (C.MAX_REPEAT, C.MIN_REPEAT) and av[1] > 1
            if repeat and has_repeat(av[2]) and not anchored(av[2]):
                return True
            if any(risky(sub) for sub in inner(op, av)):
                return True
        return False

    return risky(parser.parse(pattern))


@dataclass(slots=True)
class Problem:
    start: int
    end: int
    code: str
    message: str
    suggestion: str | None = None
    severity: str = "error"


def _text(src: str, node: ast.Node) -> str:
    return src[node.start : node.end]


class ExprChecker:
    """Checks expressions of one rules file. ``segments`` are the names it may reference."""

    def __init__(
        self, schema: ProfileSchema, segments: Iterable[str], page_params: Iterable[str] = ()
    ) -> None:
        self.schema = schema
        self.segments = frozenset(segments)
        # The `{name}` segments of the file's page patterns: what `ctx.page.<name>` may read.
        self.page_params = tuple(sorted(set(page_params)))
        self.problems: list[Problem] = []
        self.src = ""
        self.used_segments: set[str] = set()

    def check(self, node: ast.Node, src: str) -> tuple[ast.Node, T.Type, list[Problem]]:
        self.src = src
        self.problems = []
        new, typ = self.visit(node)
        return new, typ, self.problems

    def error(self, node: ast.Node, code: str, message: str, suggestion: str | None = None) -> None:
        self.problems.append(Problem(node.start, node.end, code, message, suggestion))

    def error_at(
        self, start: int, end: int, code: str, message: str, suggestion: str | None = None
    ) -> None:
        self.problems.append(Problem(start, end, code, message, suggestion))

    # -- dispatch ---------------------------------------------------------------------------

    def visit(self, node: ast.Node) -> tuple[ast.Node, T.Type]:
        if isinstance(node, ast.Literal):
            return node, self.literal_type(node.value)
        if isinstance(node, ast.ListLit):
            items = [self.visit(i) for i in node.items]
            non_null = [t for _, t in items if t.kind != "null"]
            kinds = {t.kind for t in non_null}
            elem = T.ANY
            if len(kinds) == 1:
                elem = non_null[0]
            elif kinds and kinds <= {"int", "number"}:
                elem = T.NUMBER
            return ast.ListLit(node.start, node.end, [n for n, _ in items]), T.Type("list", elem)
        if isinstance(node, ast.Name | ast.Attr | ast.Index):
            return self.visit_path(node)
        if isinstance(node, ast.Call):
            return self.visit_call(node)
        if isinstance(node, ast.Unary):
            operand, t = self.visit(node.operand)
            if node.op == "not":
                self.need_bool(node.operand, t, "`not`")
                return ast.Unary(node.start, node.end, "not", operand), T.BOOL
            if not T.is_numeric(t):
                self.error(node.operand, "type-mismatch", f"cannot negate a {t}")
            return ast.Unary(
                node.start, node.end, "-", operand
            ), t if t.kind != "null" else T.NUMBER
        if isinstance(node, ast.Binary):
            return self.visit_binary(node)
        self.error(
            node, "syntax", "unsupported expression"
        )  # pragma: no cover - parser's nodes only
        return node, T.ANY

    @staticmethod
    def literal_type(value: object) -> T.Type:
        if value is None:
            return T.NULL
        if isinstance(value, bool):
            return T.BOOL
        if isinstance(value, int):
            return T.INT
        if isinstance(value, float):
            return T.NUMBER
        return T.STRING

    def need_bool(self, node: ast.Node, t: T.Type, where: str) -> None:
        if t.kind not in ("bool", "any"):
            text = _text(self.src, node)
            hint = None
            if T.is_numeric(t):
                hint = f"compare it, e.g. `{text} > 0`"
            elif t.kind == "string":
                hint = f'compare it, e.g. `{text} == "…"`'
            elif t.kind == "list":
                hint = f"test it, e.g. `count({text}) > 0`"
            self.error(
                node,
                "type-mismatch",
                f"{where} needs true/false, but `{text}` is a {t}",
                hint,
            )

    # -- operators --------------------------------------------------------------------------

    def visit_binary(self, node: ast.Binary) -> tuple[ast.Node, T.Type]:
        left, lt = self.visit(node.left)
        right, rt = self.visit(node.right)
        out = ast.Binary(node.start, node.end, node.op, left, right)
        op = node.op
        if op in ("and", "or"):
            self.need_bool(node.left, lt, f"`{op}`")
            self.need_bool(node.right, rt, f"`{op}`")
            return out, T.BOOL
        if op in ("==", "!="):
            if not T.comparable(lt, rt):
                self.mismatch(node, lt, rt)
            self.check_enum(left, right)
            self.check_enum(right, left)
            return out, T.BOOL
        if op in ("<", "<=", ">", ">="):
            if lt.kind == "null" or rt.kind == "null":
                self.error(
                    node,
                    "type-mismatch",
                    f"`{op} null` is always false",
                    "use `== null` or `!= null` to test for a missing value",
                )
            elif not T.orderable(lt, rt):
                self.mismatch(node, lt, rt)
            return out, T.BOOL
        if op in ("in", "not in"):
            if rt.kind in ("list", "string", "map"):
                if not T.can_contain(rt, lt):
                    self.mismatch(node, lt, rt)
                if rt.kind == "list":
                    self.check_enum(left, right)
            elif rt.kind != "any":
                self.error(
                    node.right,
                    "type-mismatch",
                    f"`{op}` needs a list or a string on its right, but "
                    f"`{_text(self.src, node.right)}` is a {rt}",
                )
            return out, T.BOOL
        result = T.arithmetic_result(op, lt, rt)
        if result is None:
            self.error(
                node,
                "type-mismatch",
                f"`{op}` is not defined between a {lt} and a {rt}",
            )
            return out, T.ANY
        return out, result

    def mismatch(self, node: ast.Binary, lt: T.Type, rt: T.Type) -> None:
        self.error(
            node,
            "type-mismatch",
            f"cannot compare `{_text(self.src, node.left)}` ({lt}) with "
            f"`{_text(self.src, node.right)}` ({rt}); it would never match",
        )

    def check_enum(self, ref: ast.Node, other: ast.Node) -> None:
        """`profile.tier == "gld"` is a typo when `tier` declares its values: say so."""
        if not (isinstance(ref, ast.Ref) and ref.kind == "attr" and ref.key is not None):
            return
        attr = self.schema.attributes.get(ref.key)
        if attr is None or attr.values is None:
            return
        literals: list[ast.Literal] = []
        if isinstance(other, ast.Literal):
            literals = [other]
        elif isinstance(other, ast.ListLit):
            literals = [i for i in other.items if isinstance(i, ast.Literal)]
        allowed = attr.values
        for lit in literals:
            if lit.value is None or lit.value in allowed:
                continue
            self.error(
                lit,
                "enum-value",
                f"`{lit.value}` is not one of the declared values of `{ref.key}` "
                f"({', '.join(str(v) for v in allowed)})",
                suggestion_for(str(lit.value), [str(v) for v in allowed]),
            )

    # -- names ------------------------------------------------------------------------------

    def visit_path(self, node: ast.Node) -> tuple[ast.Node, T.Type]:
        steps: list[ast.Node] = []
        cur = node
        while isinstance(cur, ast.Attr | ast.Index):
            steps.append(cur)
            cur = cur.obj
        steps.reverse()
        if not isinstance(cur, ast.Name):
            self.error(node, "syntax", "only `profile`, `ctx`, `segment` and `recent` have fields")
            self.visit(cur)
            return node, T.ANY
        root = cur.id
        if root not in ROOTS:
            self.error(
                cur,
                "unknown-name",
                f"unknown name `{root}`",
                suggestion_for(root, (*ROOTS, *FUNCTIONS))
                or "names start with `profile.`, `ctx.`, `segment.` or `recent.`",
            )
            return node, T.ANY
        if not steps:
            self.error(cur, "syntax", f"`{root}` needs a field, e.g. `{root}.…`")
            return node, T.ANY
        handler = {
            "profile": self.path_profile,
            "ctx": self.path_ctx,
            "segment": self.path_segment,
            "recent": self.path_recent,
        }[root]
        return handler(node, steps)

    def key_of(self, step: ast.Node, what: str) -> tuple[str | None, ast.Node | None]:
        """The literal key of `.name` / `["name"]`, or the checked computed key node."""
        if isinstance(step, ast.Attr):
            return step.name, None
        if not isinstance(step, ast.Index):
            return None, None
        if isinstance(step.index, ast.Literal) and isinstance(step.index.value, str):
            return step.index.value, None
        key, kt = self.visit(step.index)
        if kt.kind not in ("string", "any"):
            self.error(step.index, "type-mismatch", f"a {what} key must be a string, not a {kt}")
        return None, key

    def too_long(self, steps: list[ast.Node], used: int) -> bool:
        if len(steps) > used:
            extra = steps[used]
            self.error(
                extra,
                "unknown-attribute",
                f"`{_text(self.src, steps[used - 1] if used else extra)}` has no field "
                f"`{_text(self.src, extra)[len(_text(self.src, steps[used - 1])) :]}`",
            )
            return True
        return False

    def name_span(self, step: ast.Node) -> tuple[int, int]:
        if isinstance(step, ast.Attr):
            return step.name_start, step.end
        return step.start, step.end

    def path_profile(self, node: ast.Node, steps: list[ast.Node]) -> tuple[ast.Node, T.Type]:
        first = steps[0]
        name, key_node = self.key_of(first, "profile")
        if name is None:
            self.error(
                first, "syntax", "write `profile.<attribute>`; computed names are not allowed"
            )
            return node, T.ANY
        if name in ("interests", "counters", "last_seen"):
            declared = {"interests": self.schema.interests, "counters": self.schema.counters}.get(
                name
            )
            vtype = T.TIMESTAMP if name == "last_seen" else T.NUMBER
            kind = {"interests": "interest", "counters": "counter", "last_seen": "last_seen"}[name]
            if len(steps) == 1:
                return ast.Ref(node.start, node.end, kind + "s_map", nullable=False), T.Type(
                    "map", vtype
                )
            key, key_node = self.key_of(steps[1], name)
            if self.too_long(steps, 2):
                return node, T.ANY
            if key is not None and declared is not None and key not in declared:
                s, e = self.name_span(steps[1])
                self.error_at(
                    s,
                    e,
                    "unknown-attribute",
                    f"unknown {name[:-1] if name != 'last_seen' else 'last_seen key'} `{key}`",
                    suggestion_for(key, declared),
                )
            return ast.Ref(node.start, node.end, kind, key, key_node), vtype
        if name == "segments":
            if self.too_long(steps, 1):
                return node, T.ANY
            return ast.Ref(node.start, node.end, "psegments", nullable=False), T.STRING_LIST
        if name == "id":
            if self.too_long(steps, 1):
                return node, T.ANY
            return ast.Ref(node.start, node.end, "pid"), T.STRING
        rest = steps
        if name == "attributes":
            if len(steps) == 1:
                self.error(first, "syntax", "write `profile.<attribute>`")
                return node, T.ANY
            rest = steps[1:]
            name, _ = self.key_of(rest[0], "attribute")
            if name is None:
                self.error(rest[0], "syntax", "attribute names must be written out")
                return node, T.ANY
        if self.too_long(rest, 1):
            return node, T.ANY
        attr = self.schema.attributes.get(name)
        if attr is None:
            s, e = self.name_span(rest[0])
            known = [*self.schema.attributes, *PROFILE_BUILTINS]
            self.error_at(
                s,
                e,
                "unknown-attribute",
                f"unknown attribute `profile.{name}`",
                suggestion_for(name, known)
                or "declare it under `schema: attributes:` at the top of the file",
            )
            return node, T.ANY
        return ast.Ref(
            node.start, node.end, "attr", name, is_bool=attr.type.kind == "bool"
        ), attr.type

    def path_ctx(self, node: ast.Node, steps: list[ast.Node]) -> tuple[ast.Node, T.Type]:
        name, _ = self.key_of(steps[0], "ctx")
        if name == "page":
            return self.path_page(node, steps)
        if name is None or name not in CTX_NAMES:
            s, e = self.name_span(steps[0])
            self.error_at(
                s,
                e,
                "unknown-name",
                f"unknown context field `ctx.{name}`",
                suggestion_for(name or "", CTX_NAMES),
            )
            return node, T.ANY
        if name == "geo":
            if len(steps) == 1:
                self.error(
                    steps[0],
                    "syntax",
                    "write `ctx.geo.country`, `ctx.geo.region` or `ctx.geo.city`",
                )
                return node, T.ANY
            sub, _ = self.key_of(steps[1], "geo")
            if self.too_long(steps, 2):
                return node, T.ANY
            if sub not in GEO_FIELDS:
                s, e = self.name_span(steps[1])
                self.error_at(
                    s,
                    e,
                    "unknown-name",
                    f"unknown field `ctx.geo.{sub}`",
                    suggestion_for(sub or "", GEO_FIELDS),
                )
                return node, T.ANY
            return ast.Ref(node.start, node.end, "geo", sub), FIELDS[f"geo.{sub}"].type
        if self.too_long(steps, 1):
            return node, T.ANY
        field = FIELDS[name]
        return (
            ast.Ref(
                node.start,
                node.end,
                "ctx",
                name,
                nullable=field.nullable,
                is_bool=field.type.kind == "bool",
            ),
            field.type,
        )

    def path_page(self, node: ast.Node, steps: list[ast.Node]) -> tuple[ast.Node, T.Type]:
        """`ctx.page.<name>`: the value of a `{name}` segment of the matched page's pattern, a
        string, or null when the request's page has no such segment."""
        if len(steps) == 1:
            self.error(steps[0], "syntax", "write `ctx.page.<name>`, a `{name}` of `pages:`")
            return node, T.ANY
        sub, _ = self.key_of(steps[1], "page")
        if self.too_long(steps, 2):
            return node, T.ANY
        if sub is None or sub not in self.page_params:
            s, e = self.name_span(steps[1])
            self.error_at(
                s,
                e,
                "unknown-name",
                f"unknown page value `ctx.page.{sub}`: no pattern under `pages:` has a "
                f"`{{{sub}}}` segment",
                suggestion_for(sub or "", self.page_params)
                or "name a segment in a pattern, e.g. `/product/{sku}`, then read `ctx.page.sku`",
            )
            return node, T.ANY
        return ast.Ref(node.start, node.end, "page", sub), T.STRING

    def path_segment(self, node: ast.Node, steps: list[ast.Node]) -> tuple[ast.Node, T.Type]:
        name, _ = self.key_of(steps[0], "segment")
        if self.too_long(steps, 1):
            return node, T.ANY
        if name is None or name not in self.segments:
            s, e = self.name_span(steps[0])
            self.error_at(
                s,
                e,
                "unknown-segment",
                f"unknown segment `{name}`",
                suggestion_for(name or "", self.segments)
                or "define it under `segments:` (upstream segments are in `profile.segments`)",
            )
            return node, T.ANY
        self.used_segments.add(name)
        return ast.Ref(node.start, node.end, "segment", name, nullable=False, is_bool=True), T.BOOL

    def path_recent(self, node: ast.Node, steps: list[ast.Node]) -> tuple[ast.Node, T.Type]:
        name, _ = self.key_of(steps[0], "recent")
        if name is None or name not in RECENT_FIELDS:
            s, e = self.name_span(steps[0])
            self.error_at(
                s,
                e,
                "unknown-name",
                f"unknown field `recent.{name}`",
                suggestion_for(name or "", RECENT_FIELDS),
            )
            return node, T.ANY
        if name == "categories" and len(steps) == 2:
            key, key_node = self.key_of(steps[1], "category")
            return ast.Ref(node.start, node.end, "recent_cat", key, key_node), T.NUMBER
        if self.too_long(steps, 1):
            return node, T.ANY
        return ast.Ref(node.start, node.end, "recent", name, nullable=False), RECENT_FIELDS[name]

    # -- calls ------------------------------------------------------------------------------

    def visit_call(self, node: ast.Call) -> tuple[ast.Node, T.Type]:
        """A built-in, typed from its one description (`rules.builtins`): arity, then each
        argument (the receiver of a method first) against the types its parameter accepts."""
        args = [self.visit(a) for a in node.args]
        method = node.obj is not None
        table = METHODS if method else FUNCTIONS
        name = node.func
        builtin = table.get(name)
        if builtin is None:
            what = "method" if method else "function"
            shown = f"`.{name}()`" if method else f"`{name}`"
            self.error_at(
                node.func_start,
                node.func_start + len(name),
                "unknown-function",
                f"unknown {what} {shown}",
                suggestion_for(name, table) or f"available {what}s: {', '.join(table)}",
            )
            if node.obj is not None:
                self.visit(node.obj)
            return node, T.ANY
        obj: ast.Node | None = None
        given: list[tuple[ast.Node, ast.Node, T.Type]] = []  # (as written, checked, type)
        if node.obj is not None:
            obj, ot = self.visit(node.obj)
            given.append((node.obj, obj, ot))
        if len(args) != builtin.arity:
            n = builtin.arity
            plural = "(s)" if method else ("s" if n > 1 else "")
            self.error(
                node, "arity", f"{builtin.label} takes {n} argument{plural}, {len(args)} given"
            )
            return node, T.ANY
        given.extend((written, new, t) for written, (new, t) in zip(node.args, args, strict=True))
        out = ast.Call(node.start, node.end, name, [a for a, _ in args], obj, node.func_start)
        for i, (param, (written, new, t)) in enumerate(zip(builtin.params, given, strict=True)):
            if param.member:
                self.check_member(node, builtin, given[0], written, t)
            elif not accepts(param, t):
                self.wrong_argument(node, builtin, i, param, written, t)
            elif param.pattern:
                self.check_pattern(written, new)
        return out, builtin.result

    def wrong_argument(
        self, call: ast.Call, b: Builtin, i: int, param: Param, written: ast.Node, t: T.Type
    ) -> None:
        text = _text(self.src, written)
        if b.method and i == 0:
            message = f"{b.label} works on {param.noun}, but `{text}` is a {t}"
        elif b.method:
            message = f"{b.label} needs {param.noun} argument, but `{text}` is a {t}"
        else:
            where = " first" if len(b.params) > 1 and i == 0 else ""
            message = f"`{b.name}` needs {param.noun}{where}, not a {t}"
        self.error(written, "type-mismatch", message, self.fix(call, b, written, param.kinds))

    def check_member(
        self,
        call: ast.Call,
        b: Builtin,
        container: tuple[ast.Node, ast.Node, T.Type],
        written: ast.Node,
        t: T.Type,
    ) -> None:
        """`has(c, x)` / `c.contains(x)` mean `x in c`: the item must fit what `c` holds —
        `has(ctx.site, 1)` would fail on every request, `has(profile.segments, 1)` never match."""
        c_written, _, ct = container
        if T.can_contain(ct, t) or ct.kind not in ("list", "map", "string"):
            return  # a container of the wrong type is reported on its own
        noun = item_noun(ct)
        kinds = frozenset({ct.elem.kind}) if ct.kind == "list" and ct.elem else frozenset()
        self.error(
            written,
            "type-mismatch",
            f"{b.label} looks for {noun} in `{_text(self.src, c_written)}` (a {ct}), "
            f"but `{_text(self.src, written)}` is a {t}",
            self.fix(call, b, written, kinds or frozenset({"string"})),
        )

    def fix(self, call: ast.Call, b: Builtin, written: ast.Node, kinds: frozenset[str]) -> str:
        """A suggestion a marketer can act on: the call rewritten when a literal only needs quotes,
        else an example of the built-in used as intended."""
        if kinds == {"string"} and isinstance(written, ast.Literal) and written.value is not None:
            value = str(written.value).lower() if isinstance(written.value, bool) else written.value
            call_text = _text(self.src, call)
            start, end = written.start - call.start, written.end - call.start
            fixed = f'{call_text[:start]}"{value}"{call_text[end:]}'
            return f"write the value as text, in quotes: `{fixed}`"
        return f"for example `{b.example}`"

    def check_pattern(self, written: ast.Node, pat: ast.Node) -> None:
        """Patterns are literal, short, valid and cannot backtrack exponentially."""
        if not (isinstance(pat, ast.Literal) and isinstance(pat.value, str)):
            self.error(
                written,
                "regex",
                "`.matches()` needs a literal pattern (patterns are compiled once, when the "
                "rules are loaded)",
            )
        elif len(pat.value) > MAX_REGEX_LENGTH:
            self.error(pat, "too-long", f"pattern longer than {MAX_REGEX_LENGTH} characters")
        else:
            try:
                re.compile(pat.value)
            except (re.error, RecursionError, OverflowError) as exc:
                self.error(pat, "regex", f"invalid pattern: {exc}")
            else:
                if _nested_repeat(pat.value):
                    self.error(
                        pat,
                        "regex-backtracking",
                        "a repeated group holds another repeat: on a hostile value this "
                        "pattern takes exponential time; make the inner repeat possessive "
                        "(`a++`) or atomic (`(?>a+)`), or drop the outer one",
                    )
