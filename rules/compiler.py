"""Checked expressions → Python code objects, built as a Python `ast` tree (never as source text).

User text never reaches `compile()` as code: names become `ast.Name`s we choose, literals become
`ast.Constant`s, regexes are compiled here once and reached through a global we name. The generated
functions run with empty builtins and see only the helpers listed in `HELPERS`; the only attribute
accesses are `.get` on the profile's mappings, the context's fields and the string methods below.

Every generated function takes the same positional arguments (`ARGS`), prepared once per request:

    A attributes · I interests · N counters · L last_seen · G upstream segments · PID profile id ·
    X context · H hour · W weekday · NOW epoch s · S segment values · RV RP RC recent views,
    purchases, cart · RK recent categories · UNTIL the request's clock cell (below)

`days_since(t)` compared with a number (`days_since(t) > 90`, `30 <= days_since(t)`, …) does not
read ``NOW``: it calls a `_since_*` helper with the cell ``UNTIL = [until, now]``, which compares as
``(now - t) / 86400.0 > c`` did and, when the answer can still change (days_since only grows),
lowers ``until`` to the instant it would. So such a comparison costs the decision no more than its
own edge (`rules.expiry`), while every other use of the clock loads ``NOW``. ``UNTIL`` defaults to
None: only functions with such comparisons (the `expiry.TRACKED` bit) need the cell.
"""

from __future__ import annotations

import ast as py
import math
import re
import types
from collections.abc import Callable, Sequence
from typing import Any, TypeGuard

from rules import ast, expiry, fold
from rules.builtins import METHODS
from rules.context import CLOCK_FIELDS, FIELDS, KEY_FIELDS

ARGS = ("A", "I", "N", "L", "G", "PID", "X", "H", "W", "NOW", "S", "RV", "RP", "RC", "RK", "UNTIL")

# A bound this much (relative to the operands) before t + c·86400 is never after the instant
# `(now - t) / 86400.0` crosses c, whatever the rounding of either computation (a few ulps; this is
# ≈ 64 times that, ≈ 25 µs for today's epoch times). The absolute term covers t = c = 0.
_EDGE_RELATIVE = 2.0**-46
_EDGE_ABSOLUTE = 1e-300


def _edge(cell: list[float], t: float, c: float, now: float) -> None:
    """Lowers ``cell[0]`` to an instant after ``now`` and not after the first one at which
    ``(now - t) / 86400.0`` reaches or passes ``c`` (the caller knows it has not yet)."""
    seconds = c * 86400.0
    bound = t + seconds - (abs(t) + abs(seconds)) * _EDGE_RELATIVE - _EDGE_ABSOLUTE
    if not bound > now:
        # Within the rounding margin of the edge (or odd data: t infinite or NaN): the answer may
        # change at the next representable instant; that much is always true.
        bound = math.nextafter(now, math.inf)
    if bound < cell[0]:
        cell[0] = bound


# days_since(t) OP c for a number c, given the clock cell [until, now]. Each computes exactly what
# the inline `(NOW - t) / 86400.0 OP c` would (same exceptions for odd data) and records, while the
# answer can still flip, the edge where it would.
def _since_gt(cell: list[float], t: float, c: float) -> bool:
    now = cell[1]
    if (now - t) / 86400.0 > c:
        return True  # for ever: days_since only grows
    _edge(cell, t, c, now)
    return False


def _since_ge(cell: list[float], t: float, c: float) -> bool:
    now = cell[1]
    if (now - t) / 86400.0 >= c:
        return True
    _edge(cell, t, c, now)
    return False


def _since_lt(cell: list[float], t: float, c: float) -> bool:
    now = cell[1]
    if (now - t) / 86400.0 < c:
        _edge(cell, t, c, now)
        return True
    return False  # for ever


def _since_le(cell: list[float], t: float, c: float) -> bool:
    now = cell[1]
    if (now - t) / 86400.0 <= c:
        _edge(cell, t, c, now)
        return True
    return False


# `days_since(x) OP c` → helper; `c OP days_since(x)` is `days_since(x) MIRROR[OP] c`.
_SINCE = {">": "_since_gt", ">=": "_since_ge", "<": "_since_lt", "<=": "_since_le"}
_MIRROR = {">": "<", ">=": "<=", "<": ">", "<=": ">="}


def _page(params: dict[str, str] | None, key: str) -> str | None:
    """`ctx.page.<key>`: None when the page has no such value (or no rule made the engine look)."""
    return None if params is None else params.get(key)


HELPERS: dict[str, object] = {
    "_page": _page,
    "_len": len,
    "_Exception": Exception,
    "_since_gt": _since_gt,
    "_since_ge": _since_ge,
    "_since_lt": _since_lt,
    "_since_le": _since_le,
}
# Helpers known not to read the clock — or, the `_since_*` ones, to read it only through the UNTIL
# cell, recording there until when their answer holds. A global a function loads that is not here
# (nor one of the rule set's precompiled regexes) makes its decisions count as reading `now` (see
# rules/expiry.py).
CLOCK_FREE_HELPERS = frozenset(HELPERS)

# The context fields passed as arguments of their own (the clock), not read as attributes of X.
_CLOCK_ARGS = {"hour": "H", "weekday": "W", "now": "NOW"}
# Attribute names generated code may use (checked by the tests on every code object's co_names):
# `.get` on the profile's mappings, `.search` on a precompiled regex, the string methods of
# `rules.builtins` (`.contains` compiles to `in`) and the context fields read off X and X.geo.
ALLOWED_ATTRIBUTES = frozenset(
    {
        "get",
        "search",
        "params",  # X.params: `ctx.page.<name>`
        *(name for name in METHODS if name not in ("contains", "matches")),
        *(part for name in FIELDS if name not in _CLOCK_ARGS for part in name.split(".")),
    }
)

_COMPARE_OPS: dict[str, py.cmpop] = {
    "==": py.Eq(),
    "!=": py.NotEq(),
    "<": py.Lt(),
    "<=": py.LtE(),
    ">": py.Gt(),
    ">=": py.GtE(),
    "in": py.In(),
    "not in": py.NotIn(),
}
_ARITH_OPS: dict[str, py.operator] = {
    "+": py.Add(),
    "-": py.Sub(),
    "*": py.Mult(),
    "/": py.Div(),
    "%": py.Mod(),
}
_BOOL_CALLS = frozenset({"has", "startswith", "endswith", "contains", "matches"})

Fn = Callable[..., Any]


def _is_days_since(node: ast.Node) -> TypeGuard[ast.Call]:
    return isinstance(node, ast.Call) and node.obj is None and node.func == "days_since"


def _name(id: str) -> py.Name:
    return py.Name(id=id, ctx=py.Load())


def _const(v: object) -> py.expr:
    # Only literal values of the language (and frozensets/tuples of them) reach this point.
    return py.Constant(value=v)  # type: ignore[arg-type]


def _is_none(e: py.expr) -> py.expr:
    return py.Compare(left=e, ops=[py.Is()], comparators=[_const(None)])


def _not_none(e: py.expr) -> py.expr:
    return py.Compare(left=e, ops=[py.IsNot()], comparators=[_const(None)])


def _and(parts: list[py.expr]) -> py.expr:
    return parts[0] if len(parts) == 1 else py.BoolOp(op=py.And(), values=parts)


def _or(parts: list[py.expr]) -> py.expr:
    return parts[0] if len(parts) == 1 else py.BoolOp(op=py.Or(), values=parts)


def _value(value: object) -> py.expr:
    """A folded value as code: lists stay lists (so `==` with a list attribute works)."""
    if isinstance(value, list):
        return py.List(elts=[_value(v) for v in value], ctx=py.Load())
    return _const(value)


def _frozen(value: object) -> object:
    if isinstance(value, list):
        items = tuple(_frozen(v) for v in value)
        try:
            return frozenset(items)
        except TypeError:
            return items
    return value


class Shared:
    """Globals shared by all functions of one rule set: helpers and precompiled regexes."""

    def __init__(self) -> None:
        self.globals: dict[str, object] = {"__builtins__": {}, **HELPERS}
        self._regex: dict[str, str] = {}
        self._clock_free = set(CLOCK_FREE_HELPERS)
        # code object → what it can read of the clock and live data (bits of rules/expiry.py)
        self._uses: dict[types.CodeType, int] = {}
        # code object → the context fields it can read (names of `rules.context.KEY_FIELDS`)
        self._reads: dict[types.CodeType, frozenset[str]] = {}
        # code object → the profile fields it can read (`rules.interfaces.ProfileLike` names)
        self._profile: dict[types.CodeType, frozenset[str]] = {}

    def uses(self, fn: Fn) -> int:
        """What a function compiled here can read of the clock and live data (`rules.expiry`)."""
        return self._uses.get(fn.__code__, expiry.NOW)  # not compiled here: assume the worst

    def ctx_fields(self, fn: Fn) -> frozenset[str]:
        """The context fields (`rules.context.KEY_FIELDS` names) a function compiled here can read
        — apart from `now`, whose effect its `uses` bits bound."""
        return self._reads.get(fn.__code__, _ALL_FIELDS)  # not compiled here: every field

    def profile_fields(self, fn: Fn) -> frozenset[str]:
        """The profile fields a function compiled here can read (by the arguments it loads)."""
        return self._profile.get(fn.__code__, _ALL_PROFILE)  # not compiled here: all of them

    def _record(
        self,
        code: types.CodeType,
        names: set[str],
        attrs: set[str],
        stored: set[str],
        reads: frozenset[str],
    ) -> None:
        # Globals: names of ours, and (to be safe) any name that is neither assigned nor an arg.
        globals_ = {n for n in names if n in self.globals or (n not in stored and n not in ARGS)}
        self._uses[code] = expiry.uses(names | attrs, globals_, frozenset(self._clock_free))
        self._reads[code] = reads
        self._profile[code] = frozenset(_PROFILE_ARGS[n] for n in names if n in _PROFILE_ARGS)

    def regex(self, pattern: str) -> str:
        name = self._regex.get(pattern)
        if name is None:
            name = f"_re{len(self._regex)}"
            self._regex[pattern] = name
            self.globals[name] = re.compile(pattern)
            self._clock_free.add(name)
        return name


class Gen:
    """Generates expressions for one function (it numbers the temporaries)."""

    def __init__(self, shared: Shared, segment_index: dict[str, int], local_segments: bool) -> None:
        self.shared = shared
        self.segment_index = segment_index
        self.local_segments = local_segments
        self.n = 0

    def tmp(self) -> str:
        self.n += 1
        return f"_t{self.n}"

    def bind(self, e: py.expr) -> tuple[py.expr, py.expr]:
        """(walrus that stores e, a load of it)."""
        t = self.tmp()
        return py.NamedExpr(target=py.Name(id=t, ctx=py.Store()), value=e), _name(t)

    # -- values -----------------------------------------------------------------------------

    def expr(self, node: ast.Node) -> tuple[py.expr, bool]:
        """Python expression for a node, and whether it can be None at run time."""
        if isinstance(node, ast.Binary | ast.Unary | ast.ListLit):
            ok, value = fold.constant(node)
            if ok:
                return _value(value), value is None
        if isinstance(node, ast.Literal):
            return _const(node.value), node.value is None
        if isinstance(node, ast.ListLit):
            return py.Tuple(elts=[self.expr(i)[0] for i in node.items], ctx=py.Load()), False
        if isinstance(node, ast.Ref):
            return self.ref(node)
        if isinstance(node, ast.Unary):
            if node.op == "not":
                return py.UnaryOp(op=py.Not(), operand=self.cond(node.operand)), False
            inner, nullable = self.expr(node.operand)
            if not nullable:
                return py.UnaryOp(op=py.USub(), operand=inner), False
            store, load = self.bind(inner)
            neg = py.UnaryOp(op=py.USub(), operand=load)
            return py.IfExp(test=_is_none(store), body=_const(None), orelse=neg), True
        if isinstance(node, ast.Binary):
            if node.op in ("and", "or"):
                return self.boolop(node), False
            if node.op in _COMPARE_OPS:
                return self.compare(node), False
            return self.arith(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        raise TypeError(f"cannot compile {type(node).__name__}")  # checker guarantees otherwise

    def ref(self, node: ast.Ref) -> tuple[py.expr, bool]:
        k = node.kind
        if k == "segment":
            idx = self.segment_index[node.key or ""]
            if self.local_segments:
                return _name(f"s{idx}"), False
            return py.Subscript(value=_name("S"), slice=_const(idx), ctx=py.Load()), False
        maps = {"attr": "A", "interest": "I", "counter": "N", "last_seen": "L", "recent_cat": "RK"}
        if k in maps:
            key = self.expr(node.key_node)[0] if node.key_node is not None else _const(node.key)
            getter = py.Attribute(value=_name(maps[k]), attr="get", ctx=py.Load())
            return py.Call(func=getter, args=[key], keywords=[]), True
        whole = {
            "interests_map": "I",
            "counters_map": "N",
            "last_seen_map": "L",
            "psegments": "G",
        }
        if k in whole:
            return _name(whole[k]), False
        if k == "pid":
            return _name("PID"), True
        if k == "recent":
            return _name(
                {"views": "RV", "purchases": "RP", "cart": "RC"}.get(node.key or "", "RK")
            ), False
        if k == "geo":
            geo = py.Attribute(value=_name("X"), attr="geo", ctx=py.Load())
            return py.Attribute(value=geo, attr=node.key or "", ctx=py.Load()), True
        if k == "page":
            params = py.Attribute(value=_name("X"), attr="params", ctx=py.Load())
            call = py.Call(func=_name("_page"), args=[params, _const(node.key)], keywords=[])
            return call, True
        if k == "ctx":
            if node.key in _CLOCK_ARGS:
                return _name(_CLOCK_ARGS[node.key or ""]), node.key != "now"
            return py.Attribute(value=_name("X"), attr=node.key or "", ctx=py.Load()), node.nullable
        raise TypeError(f"unknown reference kind {k}")

    def cond(self, node: ast.Node) -> py.expr:
        """An expression that is always a real bool (null and non-bool values count as false)."""
        e, nullable = self.expr(node)
        if isinstance(e, py.Constant):
            return _const(e.value is True)
        if isinstance(node, ast.Binary) and node.op in (*_COMPARE_OPS, "and", "or"):
            return e
        if isinstance(node, ast.Unary) and node.op == "not":
            return e
        if isinstance(node, ast.Call) and node.func in _BOOL_CALLS:
            return e
        if isinstance(node, ast.Ref) and node.is_bool and not nullable:
            return e
        return py.Compare(left=e, ops=[py.Is()], comparators=[_const(True)])

    def boolop(self, node: ast.Binary) -> py.expr:
        # Flatten `a and b and c` into one BoolOp: shorter code, shallower tree.
        values: list[py.expr] = []
        stack: list[ast.Node] = [node]
        while stack:
            n = stack.pop()
            if isinstance(n, ast.Binary) and n.op == node.op:
                stack.append(n.right)
                stack.append(n.left)
            else:
                ok, v = fold.constant(n)
                if ok and (v is True) == (node.op == "and"):
                    continue  # `true and x` is x; `false or x` is x
                values.append(self.cond(n))
        if not values:
            return _const(node.op == "and")
        return (
            py.BoolOp(op=py.And() if node.op == "and" else py.Or(), values=values)
            if len(values) > 1
            else values[0]
        )

    def container(self, node: ast.Node) -> tuple[py.expr, bool]:
        """The right side of `in`: a literal list becomes one frozenset constant, built once."""
        if isinstance(node, ast.ListLit):
            ok, value = fold.constant(node)
            if ok:
                return _const(_frozen(value)), False
        return self.expr(node)

    def since(self, node: ast.Binary) -> py.expr | None:
        """`days_since(x) OP c` (either order, OP one of < <= > >=, c a number) as a tracked
        comparison (module docstring), or None when the comparison is not of that shape."""
        op = node.op
        if op not in _SINCE:
            return None
        if _is_days_since(node.left):
            call, other = node.left, node.right
        elif _is_days_since(node.right):
            call, other, op = node.right, node.left, _MIRROR[op]
        else:
            return None
        ok, c = fold.constant(other)
        if not ok or isinstance(c, bool) or not isinstance(c, int | float):
            return None
        try:
            # c must be exact as a float, and its edge finite (else: the inline code, NOW)
            if float(c) != c or not math.isfinite(c * 86400.0):
                return None
        except OverflowError:
            return None
        arg, nullable = self.expr(call.args[0])
        store, load = self.bind(arg) if nullable else (arg, arg)
        test = py.Call(func=_name(_SINCE[op]), args=[_name("UNTIL"), load, _const(c)], keywords=[])
        return _and([_not_none(store), test]) if nullable else test

    def compare(self, node: ast.Binary) -> py.expr:
        tracked = self.since(node)
        if tracked is not None:
            return tracked
        op = node.op
        left, ln = self.expr(node.left)
        right, rn = self.container(node.right) if op in ("in", "not in") else self.expr(node.right)
        lnull = isinstance(left, py.Constant) and left.value is None
        rnull = isinstance(right, py.Constant) and right.value is None
        if op in ("==", "!=") and (lnull or rnull):
            other = right if lnull else left
            if lnull and rnull:
                return _const(op == "==")
            return _is_none(other) if op == "==" else _not_none(other)
        if op == "==" and not (ln and rn):
            # `None == "gold"` is already False; no explicit check needed.
            return py.Compare(left=left, ops=[py.Eq()], comparators=[right])
        checks: list[py.expr] = []
        if ln:
            store, left = self.bind(left)
            checks.append(_not_none(store))
        if rn:
            store, right = self.bind(right)
            checks.append(_not_none(store))
        return _and([*checks, py.Compare(left=left, ops=[_COMPARE_OPS[op]], comparators=[right])])

    def arith(self, node: ast.Binary) -> tuple[py.expr, bool]:
        left, ln = self.expr(node.left)
        right, rn = self.expr(node.right)
        guards: list[py.expr] = []
        if ln:
            store, left = self.bind(left)
            guards.append(_is_none(store))
        divides = node.op in ("/", "%")
        if rn or (divides and not isinstance(right, py.Constant)):
            store, right = self.bind(right)
            guards.append(_is_none(store))
            if divides:
                guards.append(py.Compare(left=right, ops=[py.Eq()], comparators=[_const(0)]))
        elif divides and isinstance(right, py.Constant) and right.value == 0:
            return _const(None), True
        result = py.BinOp(left=left, op=_ARITH_OPS[node.op], right=right)
        if not guards:
            return result, False
        return py.IfExp(test=_or(guards), body=_const(None), orelse=result), True

    def call(self, node: ast.Call) -> tuple[py.expr, bool]:
        """A built-in (`rules.builtins`), through its emitter in `EMITTERS`."""
        emit = EMITTERS[(node.obj is not None, node.func)]
        return emit(self, node)

    def days_since(self, node: ast.Call) -> tuple[py.expr, bool]:
        arg, nullable = self.expr(node.args[0])
        store, load = self.bind(arg) if nullable else (arg, arg)
        since = py.BinOp(
            left=py.BinOp(left=_name("NOW"), op=py.Sub(), right=load),
            op=py.Div(),
            right=_const(86400.0),
        )
        if not nullable:
            return since, False
        return py.IfExp(test=_is_none(store), body=_const(None), orelse=since), True

    def count(self, node: ast.Call) -> tuple[py.expr, bool]:
        arg, nullable = self.expr(node.args[0])
        if not nullable:
            return py.Call(func=_name("_len"), args=[arg], keywords=[]), False
        store, load = self.bind(arg)
        length = py.Call(func=_name("_len"), args=[load], keywords=[])
        return py.IfExp(test=_is_none(store), body=_const(0), orelse=length), False

    def has(self, node: ast.Call) -> tuple[py.expr, bool]:
        arg, nullable = self.container(node.args[0])
        return self.contains(arg, nullable, node.args[1]), False

    def lower(self, node: ast.Call) -> tuple[py.expr, bool]:
        arg, nullable = self.expr(node.obj if node.obj is not None else node.args[0])
        return self.method_on(arg, nullable, "lower", [])

    def contains_method(self, node: ast.Call) -> tuple[py.expr, bool]:
        obj, nullable = self.expr(node.obj) if node.obj is not None else (_const(None), True)
        return self.contains(obj, nullable, node.args[0]), False

    def matches(self, node: ast.Call) -> tuple[py.expr, bool]:
        obj, nullable = self.expr(node.obj) if node.obj is not None else (_const(None), True)
        arg_node = node.args[0]
        pattern = arg_node.value if isinstance(arg_node, ast.Literal) else ""
        rx = self.shared.regex(str(pattern))
        store, load = self.bind(obj) if nullable else (obj, obj)
        search = py.Call(
            func=py.Attribute(value=_name(rx), attr="search", ctx=py.Load()),
            args=[load],
            keywords=[],
        )
        test = _not_none(search)
        return (_and([_not_none(store), test]) if nullable else test), False

    def string_method(self, node: ast.Call) -> tuple[py.expr, bool]:
        """`.startswith(x)` / `.endswith(x)`: the str method itself, None-guarded."""
        obj, nullable = self.expr(node.obj) if node.obj is not None else (_const(None), True)
        arg, an = self.expr(node.args[0])
        checks: list[py.expr] = []
        if nullable:
            store, obj = self.bind(obj)
            checks.append(_not_none(store))
        if an:
            store, arg = self.bind(arg)
            checks.append(_not_none(store))
        call = py.Call(
            func=py.Attribute(value=obj, attr=node.func, ctx=py.Load()), args=[arg], keywords=[]
        )
        return _and([*checks, call]), False

    def contains(self, container: py.expr, nullable: bool, item_node: ast.Node) -> py.expr:
        item, item_nullable = self.expr(item_node)
        checks: list[py.expr] = []
        if nullable:
            store, container = self.bind(container)
            checks.append(_not_none(store))
        if item_nullable:
            store, item = self.bind(item)
            checks.append(_not_none(store))
        return _and([*checks, py.Compare(left=item, ops=[py.In()], comparators=[container])])

    def method_on(
        self, obj: py.expr, nullable: bool, name: str, args: list[py.expr]
    ) -> tuple[py.expr, bool]:
        store, load = self.bind(obj) if nullable else (obj, obj)
        call = py.Call(
            func=py.Attribute(value=load, attr=name, ctx=py.Load()), args=args, keywords=[]
        )
        if not nullable:
            return call, False
        return py.IfExp(test=_is_none(store), body=_const(None), orelse=call), True


Emitter = Callable[[Gen, ast.Call], tuple[py.expr, bool]]
# (is a method, name) → how each built-in of `rules.builtins` compiles; a test checks that the keys
# are exactly the built-ins described there.
EMITTERS: dict[tuple[bool, str], Emitter] = {
    (False, "days_since"): Gen.days_since,
    (False, "count"): Gen.count,
    (False, "has"): Gen.has,
    (False, "lower"): Gen.lower,
    (True, "lower"): Gen.lower,
    (True, "startswith"): Gen.string_method,
    (True, "endswith"): Gen.string_method,
    (True, "contains"): Gen.contains_method,
    (True, "matches"): Gen.matches,
}


# -- functions ------------------------------------------------------------------------------


def _function(name: str, body: list[py.stmt], shared: Shared, filename: str) -> Fn:
    args = py.arguments(
        posonlyargs=[],
        args=[py.arg(arg=a) for a in ARGS],
        vararg=None,
        kwonlyargs=[],
        kw_defaults=[],
        kwarg=None,
        defaults=[],
    )
    fields: dict[str, object] = {
        "name": name,
        "args": args,
        "body": body,
        "decorator_list": [],
        "returns": None,
    }
    if "type_params" in py.FunctionDef._fields:
        fields["type_params"] = []
    fn = py.FunctionDef(**fields)  # type: ignore[arg-type]
    module = py.Module(body=[fn], type_ignores=[])
    names: set[str] = set()
    attrs: set[str] = set()
    stored: set[str] = set()
    reads = _locate(module, names, attrs, stored)
    code = compile(module, filename, "exec", dont_inherit=True, optimize=2)
    fcode = next(c for c in code.co_consts if isinstance(c, types.CodeType))
    shared._record(fcode, names, attrs, stored, reads)
    # UNTIL defaults to None: only functions with tracked comparisons need the cell.
    return types.FunctionType(fcode, shared.globals, name, (None,))


_ALL_FIELDS = frozenset(KEY_FIELDS)
# The profile's arguments of a compiled function (`ARGS`) and the profile fields they are.
_PROFILE_ARGS = {
    "A": "attributes",
    "I": "interests",
    "N": "counters",
    "L": "last_seen",
    "G": "segments",
    "PID": "id",
}
_ALL_PROFILE = frozenset(_PROFILE_ARGS.values())
_GEO_FIELDS = frozenset(f for f in KEY_FIELDS if f.startswith("geo."))
# Context fields that are X's own attributes (geo's are reached through X.geo, `now` as NOW).
_X_FIELDS = frozenset(f for f in KEY_FIELDS if "." not in f)


# Per node class: its fields, and whether it has a position (`lineno` …) that `compile` needs.
_SHAPES: dict[type, tuple[tuple[str, ...], bool]] = {}


def _shape(cls: type) -> tuple[tuple[str, ...], bool]:
    shape = _SHAPES[cls] = (cls._fields, "lineno" in cls._attributes)  # type: ignore[attr-defined]
    return shape


def _locate(
    module: py.Module, names: set[str], attrs: set[str], stored: set[str]
) -> frozenset[str]:
    """Every node on line 1 (the code has no source); one flat pass, cheaper than
    `ast.fix_missing_locations`' recursion when thousands of placements compile (and than
    `ast.walk`'s generators: compiling happens once per activation on every node of a fleet, so
    the pass keeps each node class's shape in `_SHAPES` and visits each node once). The same pass
    collects, for `Shared.uses`, every name the code loads (in nested scopes too), every attribute
    it reads and every name it assigns or takes as an argument; and returns, for
    `Shared.ctx_fields`, the context fields the code can read, found by shape rather than by
    attribute name (a `city` read elsewhere is not `ctx.geo.city`): ``X.f``, ``X.geo.f`` and the
    clock arguments H and W (`rules.context.CLOCK_FIELDS`). Any other use of ``X`` or ``X.geo``
    (passed on whole, an attribute not known) counts as reading all of it."""
    reads: set[str] = set()
    x_loads = x_reached = 0  # loads of X; of them, those that are an X.f
    geo_nodes: set[int] = set()  # the X.geo nodes
    geo_reached: set[int] = set()  # of them, those that are the value of an X.geo.f
    shapes = _SHAPES
    ast_node, name_node, attribute_node, arg_node = py.AST, py.Name, py.Attribute, py.arg
    stack: list[py.AST] = [module]
    pop, push = stack.pop, stack.append
    while stack:
        node: Any = pop()  # exact classes compared below: generated nodes are never subclassed
        cls = type(node)
        fields, located = shapes.get(cls) or _shape(cls)
        if located:
            node.lineno = node.end_lineno = 1
            node.col_offset = node.end_col_offset = 0
        if cls is name_node:
            if type(node.ctx) is py.Load:
                names.add(node.id)
                if node.id == "X":
                    x_loads += 1
                elif node.id == "H":
                    reads.update(CLOCK_FIELDS["hour"])
                elif node.id == "W":
                    reads.update(CLOCK_FIELDS["weekday"])
            else:
                stored.add(node.id)
            continue  # its id and ctx: nothing below to place
        if cls is attribute_node:
            attrs.add(node.attr)
            value = node.value
            if type(value) is name_node and value.id == "X":
                x_reached += 1
                if node.attr == "geo":
                    geo_nodes.add(id(node))
                elif node.attr in _X_FIELDS:
                    reads.add(node.attr)
                elif node.attr == "params":  # `ctx.page.<name>`: made from the path
                    reads.add("path")
                elif node.attr != "now":  # `now` is the clock's: `uses` bounds it
                    reads.update(_ALL_FIELDS)
            elif (
                type(value) is attribute_node
                and value.attr == "geo"
                and type(value.value) is name_node
                and value.value.id == "X"
            ):
                geo_reached.add(id(value))
                field = f"geo.{node.attr}"
                reads.update((field,) if field in _GEO_FIELDS else _GEO_FIELDS)
        elif cls is arg_node:
            stored.add(node.arg)
        for name in fields:
            child = getattr(node, name, None)
            if type(child) is list:
                for x in child:
                    if isinstance(x, ast_node):
                        push(x)
            elif isinstance(child, ast_node):
                push(child)
    if x_loads > x_reached:
        reads.update(_ALL_FIELDS)
    if geo_nodes - geo_reached:
        reads.update(_GEO_FIELDS)
    return frozenset(reads)


def _assign(target: str, value: py.expr) -> py.stmt:
    return py.Assign(targets=[py.Name(id=target, ctx=py.Store())], value=value)


def _guarded(target: str, value: py.expr) -> py.stmt:
    """`target = value`, or False and one more error counted when the data makes it raise."""
    bump = py.AugAssign(target=py.Name(id="E", ctx=py.Store()), op=py.Add(), value=_const(1))
    return py.Try(
        body=[_assign(target, value)],
        handlers=[
            py.ExceptHandler(
                type=_name("_Exception"), name=None, body=[_assign(target, _const(False)), bump]
            )
        ],
        orelse=[],
        finalbody=[],
    )


def _flags_function(
    name: str,
    conds: Sequence[ast.Node | None],
    shared: Shared,
    filename: str,
    gen: Gen,
    prefix: str,
) -> Fn:
    """A function returning ((flag per condition, …), errors), each condition guarded."""
    body: list[py.stmt] = [_assign("E", _const(0))]
    for i, node in enumerate(conds):
        value = _const(True) if node is None else gen.cond(node)
        body.append(_guarded(f"{prefix}{i}", value))
    flags = py.Tuple(elts=[_name(f"{prefix}{i}") for i in range(len(conds))], ctx=py.Load())
    body.append(py.Return(value=py.Tuple(elts=[flags, _name("E")], ctx=py.Load())))
    return _function(name, body, shared, filename)


def segments_function(
    exprs: Sequence[ast.Node], shared: Shared, segment_index: dict[str, int], filename: str
) -> Fn:
    """Computes every segment once, in dependency order: ((bool, …), errors)."""
    gen = Gen(shared, segment_index, local_segments=True)
    return _flags_function("segments", exprs, shared, filename, gen, "s")


def actions_function(
    conds: Sequence[ast.Node | None], shared: Shared, segment_index: dict[str, int], filename: str
) -> Fn:
    gen = Gen(shared, segment_index, local_segments=False)
    return _flags_function("actions", conds, shared, filename, gen, "a")


def placement_function(
    name: str,
    strategy: str,
    conds: Sequence[ast.Node | None],
    scores: Sequence[ast.Node | None],
    shared: Shared,
    segment_index: dict[str, int],
    filename: str,
) -> Fn:
    """first_match: index of the first rule whose condition holds, or -1.
    score_sorted: index of the matching rule with the highest score (earliest on ties), or -1."""
    gen = Gen(shared, segment_index, local_segments=False)
    body: list[py.stmt] = []
    if strategy == "first_match":
        for i, node in enumerate(conds):
            test = _const(True) if node is None else gen.cond(node)
            if isinstance(test, py.Constant):
                if test.value is True:
                    body.append(py.Return(value=_const(i)))
                    break
                continue
            body.append(py.If(test=test, body=[py.Return(value=_const(i))], orelse=[]))
        else:
            body.append(py.Return(value=_const(-1)))
        return _function(f"placement_{name}", body, shared, filename)
    body.append(_assign("b", _const(-1)))
    body.append(_assign("bs", _const(None)))
    for i, (node, score) in enumerate(zip(conds, scores, strict=True)):
        test = _const(True) if node is None else gen.cond(node)
        if isinstance(test, py.Constant) and test.value is not True:
            continue
        sc, nullable = gen.expr(score) if score is not None else (_const(0), False)
        better = _or(
            [
                _is_none(_name("bs")),
                py.Compare(left=_name("sc"), ops=[py.Gt()], comparators=[_name("bs")]),
            ]
        )
        pick = py.If(
            test=_and([_not_none(_name("sc")), better]) if nullable else better,
            body=[_assign("b", _const(i)), _assign("bs", _name("sc"))],
            orelse=[],
        )
        inner: list[py.stmt] = [_assign("sc", sc), pick]
        if isinstance(test, py.Constant):
            body.extend(inner)
        else:
            body.append(py.If(test=test, body=inner, orelse=[]))
    body.append(py.Return(value=_name("b")))
    return _function(f"placement_{name}", body, shared, filename)


def value_function(
    node: ast.Node, shared: Shared, segment_index: dict[str, int], filename: str
) -> Fn:
    """A function returning the raw value of one sub-expression (explain mode, tests)."""
    gen = Gen(shared, segment_index, local_segments=False)
    e, _ = gen.expr(node)
    return _function("value", [py.Return(value=e)], shared, filename)


def code_objects(fn: Fn) -> list[types.CodeType]:
    """Every code object of a generated function (for audits of the names it can reach)."""
    out: list[types.CodeType] = []
    stack: list[types.CodeType] = [fn.__code__]
    while stack:
        c = stack.pop()
        out.append(c)
        stack.extend(x for x in c.co_consts if isinstance(x, types.CodeType))
    return out
