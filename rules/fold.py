"""Constant folding with the language's own semantics (null-safe comparisons and arithmetic)."""

from __future__ import annotations

from rules import ast

_MISSING = object()


class NotConstant(Exception):
    """Raised internally when a sub-tree depends on data."""


def _cmp(op: str, a: object, b: object) -> bool:
    if op == "==":
        return a is None and b is None if a is None or b is None else a == b
    if op == "!=":
        if a is None or b is None:
            return (a is None) != (b is None)
        return bool(a != b)
    if a is None or b is None:
        return False
    try:
        if op == "<":
            return bool(a < b)  # type: ignore[operator]
        if op == "<=":
            return bool(a <= b)  # type: ignore[operator]
        if op == ">":
            return bool(a > b)  # type: ignore[operator]
        return bool(a >= b)  # type: ignore[operator]
    except TypeError as exc:
        raise NotConstant from exc


def value(node: ast.Node) -> object:
    """The constant value of a tree, or raises NotConstant."""
    if isinstance(node, ast.Literal):
        return node.value
    if isinstance(node, ast.ListLit):
        return [value(i) for i in node.items]
    if isinstance(node, ast.Unary):
        v = value(node.operand)
        if node.op == "not":
            return v is not True
        if v is None:
            return None
        if isinstance(v, int | float) and not isinstance(v, bool):
            return -v
        raise NotConstant
    if isinstance(node, ast.Binary):
        op = node.op
        if op in ("and", "or"):
            # Short-circuit folding: `false and X` is false whatever X is.
            try:
                left: object = value(node.left) is True
            except NotConstant:
                left = _MISSING
            try:
                right: object = value(node.right) is True
            except NotConstant:
                right = _MISSING
            if op == "and" and (left is False or right is False):
                return False
            if op == "or" and (left is True or right is True):
                return True
            if left is _MISSING or right is _MISSING:
                raise NotConstant
            return bool(left and right) if op == "and" else bool(left or right)
        a, b = value(node.left), value(node.right)
        if op in ("==", "!=", "<", "<=", ">", ">="):
            return _cmp(op, a, b)
        if op in ("in", "not in"):
            if a is None:
                return False
            if isinstance(b, list | str):
                try:
                    found = a in b
                except TypeError as exc:
                    raise NotConstant from exc
                return found if op == "in" else not found
            raise NotConstant
        if a is None or b is None:
            return None
        if isinstance(a, bool) or isinstance(b, bool):
            raise NotConstant
        if isinstance(a, str) and isinstance(b, str) and op == "+":
            return a + b
        if not (isinstance(a, int | float) and isinstance(b, int | float)):
            raise NotConstant
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op in ("/", "%"):
            if b == 0:
                return None
            return a / b if op == "/" else a % b
    raise NotConstant


def constant(node: ast.Node) -> tuple[bool, object]:
    """(True, value) when the tree does not depend on any data, else (False, None)."""
    try:
        return True, value(node)
    except (NotConstant, OverflowError, ValueError, RecursionError):
        return False, None
