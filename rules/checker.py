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
from rules.diagnostics import suggestion_for
from rules.schema import (
    CTX_FIELDS,
    CTX_NOT_NULL,
    FUNCTIONS,
    GEO_FIELDS,
    METHODS,
    PROFILE_BUILTINS,
    RECENT_FIELDS,
    ROOTS,
    ProfileSchema,
)

MAX_REGEX_LENGTH = 200


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

    def __init__(self, schema: ProfileSchema, segments: Iterable[str]) -> None:
        self.schema = schema
        self.segments = frozenset(segments)
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
            if rt.kind == "list":
                if rt.elem is not None and not T.comparable(lt, rt.elem):
                    self.mismatch(node, lt, rt)
                self.check_enum(left, right)
            elif rt.kind == "string":
                if lt.kind not in ("string", "any", "null"):
                    self.mismatch(node, lt, rt)
            elif rt.kind == "map":
                if lt.kind not in ("string", "any"):
                    self.mismatch(node, lt, rt)
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
        if name is None or name not in CTX_FIELDS:
            s, e = self.name_span(steps[0])
            self.error_at(
                s,
                e,
                "unknown-name",
                f"unknown context field `ctx.{name}`",
                suggestion_for(name or "", CTX_FIELDS),
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
            return ast.Ref(node.start, node.end, "geo", sub), T.STRING
        if self.too_long(steps, 1):
            return node, T.ANY
        typ = CTX_FIELDS[name]
        return (
            ast.Ref(
                node.start,
                node.end,
                "ctx",
                name,
                nullable=name not in CTX_NOT_NULL,
                is_bool=typ.kind == "bool",
            ),
            typ,
        )

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
        args = [self.visit(a) for a in node.args]
        new_args = [a for a, _ in args]
        types = [t for _, t in args]
        if node.obj is not None:
            return self.visit_method(node, new_args, types)
        name = node.func
        fend = node.func_start + len(name)
        if name not in FUNCTIONS:
            self.error_at(
                node.func_start,
                fend,
                "unknown-function",
                f"unknown function `{name}`",
                suggestion_for(name, FUNCTIONS) or f"available functions: {', '.join(FUNCTIONS)}",
            )
            return node, T.ANY
        arity = {"days_since": 1, "count": 1, "has": 2, "lower": 1}[name]
        if len(args) != arity:
            self.error(
                node,
                "arity",
                f"`{name}` takes {arity} argument{'s' if arity > 1 else ''}, {len(args)} given",
            )
            return node, T.ANY
        out = ast.Call(node.start, node.end, name, new_args, None, node.func_start)
        if name == "days_since":
            if not T.is_numeric(types[0]):
                self.error(
                    node.args[0],
                    "type-mismatch",
                    f"`days_since` needs a timestamp, not a {types[0]}",
                )
            return out, T.NUMBER
        if name == "count":
            if types[0].kind not in ("list", "map", "string", "any", "null"):
                self.error(node.args[0], "type-mismatch", f"`count` needs a list, not a {types[0]}")
            return out, T.INT
        if name == "has":
            if types[0].kind not in ("list", "map", "string", "any"):
                self.error(
                    node.args[0], "type-mismatch", f"`has` needs a list first, not a {types[0]}"
                )
            return out, T.BOOL
        if types[0].kind not in ("string", "any"):
            self.error(node.args[0], "type-mismatch", f"`lower` needs a string, not a {types[0]}")
        return out, T.STRING

    def visit_method(
        self, node: ast.Call, args: list[ast.Node], types: list[T.Type]
    ) -> tuple[ast.Node, T.Type]:
        if node.obj is None:
            return node, T.ANY
        obj, ot = self.visit(node.obj)
        name = node.func
        fend = node.func_start + len(name)
        if name not in METHODS:
            self.error_at(
                node.func_start,
                fend,
                "unknown-function",
                f"unknown method `.{name}()`",
                suggestion_for(name, METHODS) or f"available methods: {', '.join(METHODS)}",
            )
            return node, T.ANY
        arity = 0 if name == "lower" else 1
        if len(args) != arity:
            self.error(node, "arity", f"`.{name}()` takes {arity} argument(s), {len(args)} given")
            return node, T.ANY
        out = ast.Call(node.start, node.end, name, args, obj, node.func_start)
        if name == "contains" and ot.kind in ("list", "map"):
            return out, T.BOOL
        if ot.kind not in ("string", "any"):
            self.error(
                node.obj,
                "type-mismatch",
                f"`.{name}()` works on strings, but `{_text(self.src, node.obj)}` is a {ot}",
            )
        if name == "lower":
            return out, T.STRING
        if types[0].kind not in ("string", "any"):
            self.error(node.args[0], "type-mismatch", f"`.{name}()` needs a string argument")
        if name == "matches":
            pat = args[0]
            if not (isinstance(pat, ast.Literal) and isinstance(pat.value, str)):
                self.error(
                    node.args[0],
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
        return out, T.BOOL
