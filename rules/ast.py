"""Expression AST. Every node keeps its span: offsets into the expression text (end exclusive)."""

from __future__ import annotations

from dataclasses import dataclass, field

LiteralValue = str | int | float | bool | None


@dataclass(slots=True, eq=False)
class Node:
    start: int
    end: int


@dataclass(slots=True, eq=False)
class Literal(Node):
    value: LiteralValue


@dataclass(slots=True, eq=False)
class ListLit(Node):
    items: list[Node] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class Name(Node):
    """A bare name: a root (`profile`, `ctx`, `segment`, `recent`) or a misspelling of one."""

    id: str


@dataclass(slots=True, eq=False)
class Attr(Node):
    obj: Node
    name: str
    name_start: int


@dataclass(slots=True, eq=False)
class Index(Node):
    obj: Node
    index: Node


@dataclass(slots=True, eq=False)
class Call(Node):
    """A function call `days_since(t)`, or a method call `x.startswith("a")` (``obj`` set)."""

    func: str
    args: list[Node]
    obj: Node | None = None
    func_start: int = 0


@dataclass(slots=True, eq=False)
class Unary(Node):
    op: str  # "not" | "-"
    operand: Node


@dataclass(slots=True, eq=False)
class Binary(Node):
    """Arithmetic (+ - * / %), comparison (== != < <= > >= in, not in) and boolean (and, or)."""

    op: str
    left: Node
    right: Node


def children(node: Node) -> list[Node]:
    if isinstance(node, ListLit):
        return list(node.items)
    if isinstance(node, Attr):
        return [node.obj]
    if isinstance(node, Index):
        return [node.obj, node.index]
    if isinstance(node, Call):
        return ([node.obj] if node.obj is not None else []) + list(node.args)
    if isinstance(node, Unary):
        return [node.operand]
    if isinstance(node, Binary):
        return [node.left, node.right]
    if isinstance(node, Ref) and node.key_node is not None:
        return [node.key_node]
    return []


def walk(node: Node) -> list[Node]:
    """Every node of the tree, parents before children."""
    out: list[Node] = []
    stack = [node]
    while stack:
        n = stack.pop()
        out.append(n)
        stack.extend(reversed(children(n)))
    return out


@dataclass(slots=True, eq=False)
class Ref(Node):
    """A resolved data reference, produced by the checker from a `profile.…`/`ctx.…` chain.

    ``kind``: attr interest counter last_seen psegments pid ctx geo segment recent recent_cat
    interests counters last_seen_map.  ``key`` is the attribute/field name or literal map key;
    ``key_node`` a computed map key (``profile.interests[ctx.site]``).
    """

    kind: str
    key: str | None = None
    key_node: Node | None = None
    nullable: bool = True
    is_bool: bool = False
