"""The edgeside rule language. The compiler's stages are listed in `rules.pipeline` (`STAGES`):
load → read → parse → check → resolve → analyse → compile; the engine evaluates the result.

Public surface (see docs/CONTRACTS.md and docs/rules.md)::

    ruleset, diagnostics = rules.load(path_or_text, filename=...)
    engine = rules.compile_ruleset(ruleset)
    decision = engine.decide(visitor_id=..., profile=..., ctx=rules.Context(...), placements=[...])
"""

from __future__ import annotations

import os
from pathlib import Path

from rules.analysis import Report
from rules.context import Context, Geo, context_key
from rules.decision import (
    ActionDecision,
    Condition,
    Decision,
    PlacementDecision,
    TraceEntry,
    Webhook,
    decision_key,
)
from rules.diagnostics import Diagnostic, has_errors, render, render_all
from rules.engine import Engine, compile_ruleset
from rules.interfaces import ActivityLike, ContentCatalog, ContentLike, ProfileLike
from rules.model import RuleSet
from rules.pipeline import STAGES, run

__all__ = [
    "STAGES",
    "ActionDecision",
    "ActivityLike",
    "Condition",
    "ContentCatalog",
    "ContentLike",
    "Context",
    "Decision",
    "Diagnostic",
    "Engine",
    "Geo",
    "PlacementDecision",
    "ProfileLike",
    "Report",
    "RuleSet",
    "TraceEntry",
    "Webhook",
    "analyze_text",
    "check_file",
    "compile_ruleset",
    "context_key",
    "decision_key",
    "has_errors",
    "load",
    "render",
    "render_all",
]


def _text_of(
    source: str | bytes | os.PathLike[str], filename: str | None
) -> tuple[str | None, str, list[Diagnostic]]:
    if isinstance(source, os.PathLike):
        name = filename or str(source)
        data = Path(source).read_bytes()
    elif isinstance(source, bytes):
        name, data = filename or "<rules>", source
    else:
        return source, filename or "<rules>", []
    try:
        return data.decode("utf-8"), name, []
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        d = Diagnostic(
            name,
            line,
            col,
            col + 1,
            "error",
            "encoding",
            f"the file is not valid UTF-8 (byte 0x{data[exc.start]:02x})",
            "save the file as UTF-8",
        )
        return None, name, [d]


def analyze_text(
    source: str | bytes | os.PathLike[str], *, filename: str | None = None
) -> tuple[RuleSet | None, list[Diagnostic], Report | None]:
    """Parse, check and analyse: the rule set (None when there are errors), every diagnostic
    (errors and warnings, sorted by position) and the analysis report (None on errors)."""
    text, name, problems = _text_of(source, filename)
    if text is None:
        return None, problems, None
    return run(text, name)


def load(
    source: str | bytes | os.PathLike[str], *, filename: str | None = None
) -> tuple[RuleSet | None, list[Diagnostic]]:
    """Parse and check a rules file. ``source`` is a path (`pathlib.Path`) or the file's text;
    with text, ``filename`` names it in diagnostics (a `.json` name selects JSON). The rule set is
    None when there is any error; warnings come back with a usable rule set."""
    ruleset, diags, _ = analyze_text(source, filename=filename)
    return ruleset, diags


def check_file(path: str | os.PathLike[str]) -> tuple[bool, list[Diagnostic]]:
    """For `rules build`: (True when the file has no errors, every diagnostic)."""
    try:
        ruleset, diags = load(Path(path))
    except OSError as exc:
        d = Diagnostic(str(path), 1, 1, 2, "error", "io", f"cannot read the file: {exc.strerror}")
        return False, [d]
    return ruleset is not None, diags
