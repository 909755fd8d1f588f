"""Errors are values: a position, a code, a message a marketer can act on, and a suggestion.

Rendered like a compiler (``file:line:col: error[code]: message``, the source line, a caret), sorted
by position, many reported at once — the checker never stops at the first mistake.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Literal

import msgspec

Severity = Literal["error", "warning"]


class Diagnostic(msgspec.Struct):
    """One finding of `rules check`. Lines and columns are 1-based; ``end_col`` is exclusive."""

    file: str
    line: int
    col: int
    end_col: int
    severity: Severity
    code: str
    message: str
    suggestion: str | None = None
    source_line: str = ""


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """The closest known name to a misspelt one, or None when nothing is close."""
    matches = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return matches[0] if matches else None


def suggestion_for(name: str, candidates: Iterable[str]) -> str | None:
    """A ready-to-print suggestion (``did you mean `tier`?``) or None."""
    best = did_you_mean(name, candidates)
    return f"did you mean `{best}`?" if best is not None else None


def sort_key(d: Diagnostic) -> tuple[str, int, int, int, str]:
    return (d.file, d.line, d.col, 0 if d.severity == "error" else 1, d.code)


def sorted_diagnostics(diags: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Sorted by position, errors before warnings at the same spot, exact duplicates removed."""
    seen: set[tuple[object, ...]] = set()
    out: list[Diagnostic] = []
    for d in sorted(diags, key=sort_key):
        ident = (d.file, d.line, d.col, d.code, d.message)
        if ident not in seen:
            seen.add(ident)
            out.append(d)
    return out


def has_errors(diags: Iterable[Diagnostic]) -> bool:
    return any(d.severity == "error" for d in diags)


def render(d: Diagnostic) -> str:
    """Human form: the headline, the source line with a caret under the offending text, the help."""
    head = f"{d.file}:{d.line}:{d.col}: {d.severity}[{d.code}]: {d.message}"
    lines = [head]
    if d.source_line:
        gutter = str(d.line)
        pad = " " * len(gutter)
        # Tabs would misalign the caret: show them as single spaces, as the column counts them.
        src = d.source_line.replace("\t", " ")
        width = max(1, min(d.end_col, len(src) + 1) - d.col)
        lines.append(f"{gutter} | {src}")
        lines.append(f"{pad} | {' ' * (d.col - 1)}{'^' * width}")
        if d.suggestion:
            lines.append(f"{pad} = help: {d.suggestion}")
    elif d.suggestion:
        lines.append(f"  = help: {d.suggestion}")
    return "\n".join(lines)


def render_all(diags: Iterable[Diagnostic]) -> str:
    return "\n\n".join(render(d) for d in diags)
