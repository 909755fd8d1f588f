"""The built-in functions and methods of the expression language, each described once.

The checker derives everything it knows of a built-in from its `Builtin` here: the name, how many
arguments it takes, which types each accepts, the result type, the messages and the example a
suggestion shows. The compiler has one emitter per built-in (`rules.compiler`), and a test checks
that its table covers exactly these names.
"""

from __future__ import annotations

from dataclasses import dataclass

from rules import types as T


@dataclass(frozen=True, slots=True)
class Param:
    """One argument (for a method, the first is the value it is called on)."""

    name: str
    kinds: frozenset[str]  # type kinds accepted besides `any` (unknown until run time)
    noun: str  # what it must be, as a message says it: "a list", "a timestamp"
    # An item to look for in the first argument (as with `in`): its type must fit that one's.
    member: bool = False
    # A regular expression: a literal text, compiled once when the rules load.
    pattern: bool = False


@dataclass(frozen=True, slots=True)
class Builtin:
    name: str
    method: bool  # written `x.name(…)` rather than `name(x, …)`
    params: tuple[Param, ...]
    result: T.Type
    example: str  # how it is used, for suggestions
    summary: str

    @property
    def arity(self) -> int:
        """Arguments written between the brackets (a method's receiver is not one)."""
        return len(self.params) - 1 if self.method else len(self.params)

    @property
    def label(self) -> str:
        return f"`.{self.name}()`" if self.method else f"`{self.name}`"


_ANY_KIND = frozenset({"string", "int", "number", "bool", "timestamp", "list", "map", "null"})
_TEXT = frozenset({"string"})
_TIME = frozenset({"int", "number", "timestamp", "null"})
_CONTAINER = frozenset({"list", "map", "string"})
_ITEM = Param("item", _ANY_KIND, "an item", member=True)

FUNCTIONS: dict[str, Builtin] = {
    b.name: b
    for b in (
        Builtin(
            "days_since",
            False,
            (Param("time", _TIME, "a timestamp"),),
            T.NUMBER,
            'days_since(profile.last_seen["category:shoes"]) > 30',
            "days from a timestamp to now (null when the timestamp is)",
        ),
        Builtin(
            "count",
            False,
            (Param("items", _CONTAINER | {"null"}, "a list"),),
            T.INT,
            "count(recent.views) > 3",
            "how many items a list, map or text holds (0 for null)",
        ),
        Builtin(
            "has",
            False,
            (Param("items", _CONTAINER, "a list"), _ITEM),
            T.BOOL,
            'has(profile.segments, "newsletter")',
            "whether a list (or map, or text) holds an item",
        ),
        Builtin(
            "lower",
            False,
            (Param("text", _TEXT, "a string"),),
            T.STRING,
            'lower(ctx.device) == "mobile"',
            "the text in lower case",
        ),
    )
}

METHODS: dict[str, Builtin] = {
    b.name: b
    for b in (
        Builtin(
            "startswith",
            True,
            (Param("text", _TEXT, "strings"), Param("prefix", _TEXT, "a string")),
            T.BOOL,
            'ctx.path.startswith("/shoes")',
            "whether a text starts with another",
        ),
        Builtin(
            "endswith",
            True,
            (Param("text", _TEXT, "strings"), Param("suffix", _TEXT, "a string")),
            T.BOOL,
            'ctx.path.endswith(".html")',
            "whether a text ends with another",
        ),
        Builtin(
            "contains",
            True,
            (Param("items", _CONTAINER, "strings, lists and maps"), _ITEM),
            T.BOOL,
            'ctx.path.contains("sale")',
            "whether a text holds another, or a list or map an item",
        ),
        Builtin(
            "matches",
            True,
            (Param("text", _TEXT, "strings"), Param("pattern", _TEXT, "a string", pattern=True)),
            T.BOOL,
            'ctx.path.matches("^/p/[0-9]+$")',
            "whether a regular expression matches somewhere in a text",
        ),
        Builtin(
            "lower",
            True,
            (Param("text", _TEXT, "strings"),),
            T.STRING,
            'ctx.device.lower() == "mobile"',
            "the text in lower case",
        ),
    )
}


def accepts(param: Param, t: T.Type) -> bool:
    return t.kind == "any" or t.kind in param.kinds


def item_noun(container: T.Type) -> str:
    """What an item looked for in a value of this type must be."""
    if container.kind == "list" and container.elem is not None and container.elem.kind != "any":
        return f"a {container.elem}"
    if container.kind in ("string", "map"):
        return "a string"
    return "an item"
