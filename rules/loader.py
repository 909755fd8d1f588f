"""YAML or JSON text → a tree of positioned nodes (every value knows its file:line:col).

Both formats go through PyYAML's composer, which keeps a mark on every node. JSON is first
validated with the standard JSON parser (so a JSON file means exactly what JSON says — ``1e5`` is a
number, duplicate or trailing commas are errors), then composed for positions; its scalars are
re-read with JSON's own rules. YAML 1.1's surprises are defused where it matters: fields that are
strings by schema read the scalar's original text, so ``NO`` (Norway) stays ``"NO"``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

import yaml

from rules.diagnostics import Diagnostic
from rules.source import Source

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_constructor = yaml.SafeLoader("")  # only its scalar constructors are used, on nodes we hand it

Kind = Literal["map", "list", "scalar"]
# Aliases let a few lines of YAML expand into billions of values; no rules file needs this many.
MAX_NODES = 2_000_000
Scalar = str | int | float | bool | None
_STR = "tag:yaml.org,2002:str"


@dataclass(slots=True, eq=False)
class Node:
    """One value of the file with where it sits. ``start``/``end`` are character indexes."""

    kind: Kind
    start: int
    end: int
    line: int
    col: int
    value: Scalar = None  # scalars: the typed value
    text: str = ""  # scalars: the value as written (before YAML 1.1 typing)
    quoted: bool = False
    items: list[Node] = field(default_factory=list)  # lists
    entries: dict[str, tuple[Node, Node]] = field(default_factory=dict)  # maps: key -> (key, value)

    def get(self, key: str) -> Node | None:
        pair = self.entries.get(key)
        return pair[1] if pair is not None else None


@dataclass(slots=True)
class Loaded:
    source: Source
    root: Node | None
    diagnostics: list[Diagnostic]


def _diag(source: Source, line: int, col: int, code: str, message: str) -> Diagnostic:
    return Diagnostic(
        file=source.filename,
        line=line,
        col=col,
        end_col=col + 1,
        severity="error",
        code=code,
        message=message,
        source_line=source.line_text(line),
    )


def load_text(text: str, filename: str) -> Loaded:
    """Parse a rules file. Syntax problems come back as diagnostics, never as exceptions."""
    is_json = filename.lower().endswith(".json") or (
        not filename.lower().endswith((".yaml", ".yml")) and text.lstrip().startswith("{")
    )
    source = Source(text, filename)
    diags: list[Diagnostic] = []
    composed_text = text
    if is_json:
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            diags.append(_diag(source, exc.lineno, exc.colno, "syntax", f"invalid JSON: {exc.msg}"))
            return Loaded(source, None, diags)
        except RecursionError:
            diags.append(_diag(source, 1, 1, "syntax", "invalid JSON: nested too deeply"))
            return Loaded(source, None, diags)
        # In valid JSON a literal tab can only be whitespace between tokens, which YAML's flow
        # context rejects; a space keeps every column where it was.
        composed_text = text.replace("\t", " ")
    try:
        node = yaml.compose(composed_text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        problem = exc.problem or exc.context or "syntax error"
        diags.append(_diag(source, line, col, "syntax", f"invalid YAML: {problem}"))
        return Loaded(source, None, diags)
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        diags.append(_diag(source, 1, 1, "syntax", f"cannot read the file: {exc}"))
        return Loaded(source, None, diags)
    if node is None:
        diags.append(_diag(source, 1, 1, "syntax", "the file is empty"))
        return Loaded(source, None, diags)
    budget = [MAX_NODES]
    # Only an alias can make the tree bigger than the text, and an alias needs an anchor (`&`,
    # which JSON cannot hold outside a string): without one, `_convert`'s budget bounds the size
    # as it goes, and the walk of the shared graph (a fifth of loading) is not needed.
    if "&" in composed_text and _expanded_size(node) > MAX_NODES:
        budget[0] = -1
    else:
        root = _convert(node, source, is_json, diags, 0, budget)
    if budget[0] < 0:
        diags.append(
            _diag(
                source,
                1,
                1,
                "too-long",
                f"the file holds more than {MAX_NODES} values (YAML aliases expanding?)",
            )
        )
        return Loaded(source, None, diags)
    return Loaded(source, root, diags)


def _scalar_value(node: yaml.ScalarNode, is_json: bool) -> Scalar:
    if node.style in ("'", '"', "|", ">"):
        return str(node.value)
    if is_json:
        try:
            value = json.loads(node.value)
        except ValueError:
            return str(node.value)
        if isinstance(value, str | int | float | bool) or value is None:
            return value
        return str(node.value)
    if node.tag.endswith(":str"):
        return str(node.value)
    tag = node.tag.rsplit(":", 1)[-1]
    if tag in ("int", "float", "bool", "null"):
        try:
            value = _constructor.construct_object(node)
        except (yaml.YAMLError, ValueError):
            return str(node.value)
        if isinstance(value, str | int | float | bool) or value is None:
            return value
    # Timestamps, binary and other YAML types: keep the text; the schema decides what it means.
    return str(node.value)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _expanded_size(root: yaml.Node) -> int:
    """How many values the tree has once aliases are expanded — counted on the shared graph
    (each distinct node once, memoised), so an alias bomb is measured without expanding it."""
    size: dict[int, int] = {}
    visiting: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        kids = _children(node)
        if done:
            visiting.discard(key)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            if size[key] > MAX_NODES:
                return size[key]
            continue
        if key in size:
            continue
        if key in visiting:
            return MAX_NODES + 1  # a node that contains itself: infinite once expanded
        visiting.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in kids if id(k) not in size)
    return size[id(root)]


def _convert(
    node: yaml.Node,
    source: Source,
    is_json: bool,
    diags: list[Diagnostic],
    depth: int,
    budget: list[int],
) -> Node:
    # Every node of a fleet converts each rules version it activates (issue 18): the marks are
    # read once, and scalars (three quarters of a rules file's values) are tested for first.
    mark = node.start_mark
    line, col = mark.line + 1, mark.column + 1
    start, end = mark.index, node.end_mark.index
    budget[0] -= 1
    if budget[0] < 0:
        return Node("scalar", start, end, line, col)
    if depth > 64:
        diags.append(_diag(source, line, col, "too-deep", "the document is nested too deeply"))
        return Node("scalar", start, end, line, col)
    if isinstance(node, yaml.ScalarNode):
        style = node.style
        text = str(node.value)
        # A plain string (by far the most common scalar) is its own text.
        value = (
            text if not style and not is_json and node.tag == _STR else _scalar_value(node, is_json)
        )
        return Node(
            "scalar",
            start,
            end,
            line,
            col,
            value=value,
            text=text,
            quoted=style == "'" or style == '"',
        )
    if isinstance(node, yaml.MappingNode):
        out = Node("map", start, end, line, col)
        entries = out.entries
        for key_node, value_node in node.value:
            key = _convert(key_node, source, is_json, diags, depth + 1, budget)
            value_ = _convert(value_node, source, is_json, diags, depth + 1, budget)
            if key.kind != "scalar":
                diags.append(
                    _diag(source, key.line, key.col, "bad-key", "a key must be a plain name")
                )
                continue
            name = key.text
            if name in entries:
                first = entries[name][0]
                diags.append(
                    Diagnostic(
                        file=source.filename,
                        line=key.line,
                        col=key.col,
                        end_col=key.col + max(1, len(name)),
                        severity="error",
                        code="duplicate-key",
                        message=f"`{name}` is given twice in the same mapping "
                        f"(first at line {first.line}); the second would silently win",
                        suggestion="remove or rename one of them",
                        source_line=source.line_text(key.line),
                    )
                )
                continue
            entries[name] = (key, value_)
        return out
    if isinstance(node, yaml.SequenceNode):
        out = Node("list", start, end, line, col)
        out.items = [_convert(v, source, is_json, diags, depth + 1, budget) for v in node.value]
        return out
    return Node("scalar", start, end, line, col)  # pragma: no cover - PyYAML has no other kinds


class ScalarOrigin:
    """Maps offsets inside a scalar's value (an expression) back to the file.

    The value may differ from the file text (folded lines, quotes, escapes), so the mapping walks
    both in step: every character of the value is found, in order, in the node's slice of the file.
    It is computed only when a diagnostic needs a position — never for a clean file.
    """

    __slots__ = ("_map", "node", "source", "value")

    def __init__(self, source: Source, node: Node, value: str) -> None:
        self.source = source
        self.node = node
        self.value = value
        self._map: list[int] | None = None

    def _build(self) -> list[int]:
        text = self.source.text
        src = self.node.start
        end = min(self.node.end, len(text))
        if self.node.quoted:
            src += 1
        out: list[int] = []
        for ch in self.value:
            if ch.isspace():
                out.append(src)
                while src < end and text[src].isspace():
                    src += 1
                continue
            probe = src
            while probe < end and text[probe] != ch:
                probe += 1
            if probe < end:
                src = probe
            out.append(src)
            src = min(src + 1, end)
        out.append(src)
        return out

    def index(self, offset: int) -> int:
        if self._map is None:
            self._map = self._build()
        offset = max(0, min(offset, len(self._map) - 1))
        return self._map[offset]

    def position(self, offset: int) -> tuple[int, int]:
        return self.source.position(self.index(offset))
