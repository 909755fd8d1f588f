"""The value types of the expression language and how they combine."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Type:
    """``kind`` is one of: string int number bool timestamp list map null any."""

    kind: str
    elem: Type | None = None

    def __str__(self) -> str:
        if self.kind == "list" and self.elem is not None and self.elem.kind != "any":
            return f"list of {self.elem}"
        return self.kind


STRING = Type("string")
INT = Type("int")
NUMBER = Type("number")
BOOL = Type("bool")
TIMESTAMP = Type("timestamp")
NULL = Type("null")
ANY = Type("any")
STRING_LIST = Type("list", STRING)
NUMBER_MAP = Type("map", NUMBER)
TIMESTAMP_MAP = Type("map", TIMESTAMP)

# Types a profile attribute may be declared with in `schema:`.
DECLARABLE: dict[str, Type] = {
    "string": STRING,
    "int": INT,
    "number": NUMBER,
    "float": NUMBER,
    "bool": BOOL,
    "list": STRING_LIST,
    "timestamp": TIMESTAMP,
}

_NUMERIC = frozenset({"int", "number", "timestamp"})


def is_numeric(t: Type) -> bool:
    return t.kind in _NUMERIC or t.kind in ("any", "null")


def comparable(a: Type, b: Type) -> bool:
    """Whether ``==``/``!=`` between the two types can ever be true."""
    if a.kind in ("any", "null") or b.kind in ("any", "null"):
        return True
    if a.kind in _NUMERIC and b.kind in _NUMERIC:
        return True
    if a.kind == "list" and b.kind == "list":
        return True
    return a.kind == b.kind


def orderable(a: Type, b: Type) -> bool:
    """Whether ``< <= > >=`` is defined between the two types."""
    if a.kind == "any" or b.kind == "any":
        return True
    if a.kind in _NUMERIC and b.kind in _NUMERIC:
        return True
    return a.kind == "string" and b.kind == "string"


def arithmetic_result(op: str, a: Type, b: Type) -> Type | None:
    """Result type of ``a op b`` or None when the operation is not defined."""
    if op == "+" and a.kind == "string" and b.kind == "string":
        return STRING
    if not (is_numeric(a) and is_numeric(b)):
        return None
    if op == "/":
        return NUMBER
    if a.kind == "int" and b.kind == "int":
        return INT
    return NUMBER


def can_contain(container: Type, item: Type) -> bool:
    """Whether ``item in container`` (and `has`, `.contains()`) is defined and can be true: a list
    holds items of its element type, a text holds texts, a map holds string keys."""
    kind = container.kind
    if kind in ("any", "null"):
        return True
    if kind == "list":
        return container.elem is None or comparable(item, container.elem)
    if kind == "string":
        return item.kind in ("string", "any", "null")
    if kind == "map":
        return item.kind in ("string", "any")
    return False
