"""What every section reader shares: diagnostics at a node's position, and the shapes of values
(a mapping, a list, a text, a number in a range, …), each checked with a message a marketer can act
on. Expressions are only found here (`expression`); parsing and checking them are later stages."""

from __future__ import annotations

import math

from rules import types as T
from rules.diagnostics import Diagnostic, Severity, suggestion_for
from rules.loader import Node, ScalarOrigin
from rules.model import Expr
from rules.source import Source


class Reader:
    """Reads one file's sections; collects every problem (it never stops at the first) and every
    expression it finds, for the `parse` and `check` stages."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.diags: list[Diagnostic] = []
        self.exprs: list[Expr] = []

    # -- diagnostics ------------------------------------------------------------------------

    def report(
        self,
        line: int,
        col: int,
        end_col: int,
        code: str,
        message: str,
        suggestion: str | None = None,
        severity: Severity = "error",
    ) -> None:
        self.diags.append(
            Diagnostic(
                file=self.source.filename,
                line=line,
                col=col,
                end_col=max(end_col, col + 1),
                severity=severity,
                code=code,
                message=message,
                suggestion=suggestion,
                source_line=self.source.line_text(line),
            )
        )

    def err(
        self,
        node: Node,
        code: str,
        message: str,
        suggestion: str | None = None,
        severity: Severity = "error",
    ) -> None:
        end_line, end_col = self.source.position(node.end)
        if end_line != node.line:
            end_col = len(self.source.line_text(node.line)) + 1
        self.report(node.line, node.col, end_col, code, message, suggestion, severity)

    # -- shapes -----------------------------------------------------------------------------

    def mapping(self, node: Node | None, what: str) -> Node | None:
        if node is None:
            return None
        if node.kind != "map":
            if node.kind == "scalar" and node.value is None and not node.text:
                return None  # an empty section (`segments:` with nothing under it)
            self.err(node, "bad-value", f"{what} must be a mapping of names to values")
            return None
        return node

    def sequence(self, node: Node | None, what: str) -> list[Node]:
        if node is None or (node.kind == "scalar" and node.value is None and not node.text):
            return []
        if node.kind != "list":
            self.err(node, "bad-value", f"{what} must be a list")
            return []
        return node.items

    def keys(self, node: Node, allowed: tuple[str, ...], what: str) -> None:
        for name, (key, _) in node.entries.items():
            if name not in allowed:
                self.err(
                    key,
                    "unknown-field",
                    f"unknown field `{name}` in {what}",
                    suggestion_for(name, allowed) or f"expected one of: {', '.join(allowed)}",
                )

    def check_text(self, node: Node, text: str) -> bool:
        for ch in text:
            o = ord(ch)
            if o < 0x20 or 0x7F <= o < 0xA0:
                self.err(node, "control-char", f"control character U+{o:04X} in `{text!r}`")
                return False
        return True

    def string(
        self, node: Node | None, what: str, required: bool = False, parent: Node | None = None
    ) -> str | None:
        if node is None:
            if required and parent is not None:
                self.err(parent, "missing-field", f"{what} is required")
            return None
        if (
            node.kind != "scalar"
            or node.value is None
            or (isinstance(node.value, bool) and not node.text)
        ):
            self.err(node, "bad-value", f"{what} must be a text value")
            return None
        text = node.text  # the text as written: YAML 1.1 would turn `NO` or `on` into booleans
        if not text:
            self.err(node, "bad-value", f"{what} must not be empty")
            return None
        if not self.check_text(node, text):
            return None
        return text

    def number(self, node: Node | None, what: str, lo: float, hi: float) -> float | None:
        if node is None:
            return None
        v = node.value
        if node.kind != "scalar" or isinstance(v, bool) or not isinstance(v, int | float):
            self.err(node, "bad-value", f"{what} must be a number")
            return None
        if not (lo <= v <= hi) or math.isnan(v):
            self.err(node, "bad-value", f"{what} must be between {lo:g} and {hi:g}, not {v}")
            return None
        return float(v)

    def integer(self, node: Node | None, what: str, lo: int, hi: int) -> int | None:
        if node is None:
            return None
        v = node.value
        if node.kind != "scalar" or isinstance(v, bool) or not isinstance(v, int):
            self.err(node, "bad-value", f"{what} must be a whole number")
            return None
        if not lo <= v <= hi:
            self.err(node, "bad-value", f"{what} must be between {lo} and {hi}, not {v}")
            return None
        return v

    def strings(self, node: Node | None, what: str) -> tuple[str, ...]:
        if node is not None and node.kind == "scalar" and node.value is not None:
            one = self.string(node, what)
            return (one,) if one else ()
        out = []
        for item in self.sequence(node, what):
            s = self.string(item, f"each of {what}")
            if s is not None:
                out.append(s)
        return tuple(out)

    # -- expressions ------------------------------------------------------------------------

    def expression(self, node: Node | None, what: str, want: T.Type | None = None) -> Expr | None:
        """An expression written as text, found for the later stages (not yet parsed)."""
        if node is None:
            return None
        if node.kind != "scalar" or node.value is None:
            self.err(node, "bad-value", f"{what} must be an expression written as text")
            return None
        if isinstance(node.value, bool):
            text = "true" if node.value else "false"
        else:
            text = str(node.value) if not isinstance(node.value, str) else node.value
        expr = Expr(text, ScalarOrigin(self.source, node, text), node.line, what, want)
        self.exprs.append(expr)
        return expr
