"""`segments:` — named conditions. Read here; ordered and checked for cycles once their
expressions are checked (`rules.resolve`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rules import types as T
from rules.loader import Node
from rules.model import Expr
from rules.read.base import Reader


@dataclass(slots=True)
class Segments:
    names: tuple[str, ...] = ()  # every name declared: what `segment.…` may reference
    exprs: dict[str, Expr] = field(default_factory=dict)  # in the file's order
    keys: dict[str, Node] = field(default_factory=dict)  # where each name is written


def read_segments(r: Reader, node: Node | None) -> Segments:
    m = r.mapping(node, "`segments`")
    if m is None:
        return Segments()
    out = Segments(tuple(m.entries))
    for name, (key, value) in m.entries.items():
        out.keys[name] = key
        if not name.isidentifier():
            r.err(
                key,
                "bad-value",
                f"segment name `{name}` must be a plain name (letters, digits, _)",
            )
            continue
        e = r.expression(value, f"segment `{name}`", T.BOOL)
        if e is not None:
            out.exprs[name] = e
    return out
