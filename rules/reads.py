"""What a checked expression can read of the context, from its tree — before any code is made.

The engine compiles a placement's function on its first use (`rules.engine`), yet must know at
activation every context field a decision can depend on (the answer memos key by them) and whether
any function tracks `days_since` edges (then every call gets the clock cell). Both come from the
checked trees here: ``ctx.f`` and ``ctx.geo.f`` references (`ast.Ref`), the clock fields behind
``ctx.hour``/``ctx.weekday`` (`rules.context.CLOCK_FIELDS`), and comparisons of ``days_since(…)``.
This is a superset of what the compiled code reads (constant folding can only drop reads); the
tests hold the two equal on the demo rules and a generated file (tests/rules/test_rules_lazy.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from rules import ast
from rules.context import CLOCK_FIELDS

# The comparisons a `days_since` may be tracked through (rules.compiler `since`).
_SINCE_OPS = frozenset({">", ">=", "<", "<="})


def _is_days_since(node: ast.Node) -> bool:
    return isinstance(node, ast.Call) and node.obj is None and node.func == "days_since"


def context_reads(trees: Iterable[ast.Node | None]) -> tuple[frozenset[str], bool]:
    """(the context fields the trees can read, whether any compares a `days_since`)."""
    fields: set[str] = set()
    tracked = False
    for tree in trees:
        if tree is None:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Ref):
                if node.kind == "ctx":
                    key = node.key or ""
                    if key in CLOCK_FIELDS:
                        fields.update(CLOCK_FIELDS[key])
                    elif key != "now":  # `now` is the clock's: a decision's `expires` bounds it
                        fields.add(key)
                elif node.kind == "geo":
                    fields.add(f"geo.{node.key}")
                elif node.kind == "page":  # `ctx.page.<name>`: made from the path
                    fields.add("path")
            elif (
                not tracked
                and isinstance(node, ast.Binary)
                and node.op in _SINCE_OPS
                and (_is_days_since(node.left) or _is_days_since(node.right))
            ):
                tracked = True
    return frozenset(fields), tracked


# Data references (`ast.Ref.kind`) that read the profile, and the profile field each reads
# (`rules.interfaces.ProfileLike` names; rules.compiler `ref` loads the same arguments).
_PROFILE_KINDS = {
    "attr": "attributes",
    "interest": "interests",
    "interests": "interests",
    "interests_map": "interests",
    "counter": "counters",
    "counters": "counters",
    "counters_map": "counters",
    "last_seen": "last_seen",
    "last_seen_map": "last_seen",
    "psegments": "segments",
    "pid": "id",
}


def profile_reads(trees: Iterable[ast.Node | None]) -> frozenset[str]:
    """The profile fields the trees can read (the engine decodes a looked-up profile only that
    far: issue 15)."""
    fields: set[str] = set()
    for tree in trees:
        if tree is None:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Ref) and node.kind in _PROFILE_KINDS:
                fields.add(_PROFILE_KINDS[node.kind])
    return frozenset(fields)


def reads_page(trees: Iterable[ast.Node | None]) -> bool:
    """Whether any of the trees reads `ctx.page.<name>` (then the engine matches the page of
    every request, and gives the functions its values)."""
    return any(
        isinstance(node, ast.Ref) and node.kind == "page"
        for tree in trees
        if tree is not None
        for node in ast.walk(tree)
    )
