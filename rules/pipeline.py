"""The compiler's stages, in order — the one place that lists them (as OPA's compiler does):

    stage    does                                             errors (codes)
    load     text → a tree of positioned values               syntax, duplicate-key, too-deep
    read     tree → the data model, a reader per section;     bad-value, unknown-field,
             expressions found, not parsed (`rules.read`)     missing-field, control-char, …
    parse    each expression → its syntax tree                `SyntaxProblem`: syntax, too-long
    check    each tree → typed, names resolved                `checker.Problem`: type-mismatch,
             (`rules.checker`, `rules.builtins`)              unknown-attribute, regex, …
    resolve  → the `RuleSet`: segment order, inheritance,     cycle, duplicate-id,
             experiments linked (`rules.resolve`)             unknown-placement, unknown-rule
    analyse  → warnings and decision-key cardinality          warnings only
    compile  → an `Engine` (`rules.engine`, `rules.compiler`) none: a checked set compiles

Every stage reports all it finds (errors are values with a file position), and the stages up to
`resolve` run even when an earlier one found errors, so `rules check` shows every mistake at once;
an expression that fails a stage goes no further. `analyse` and `compile` need an error-free set.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rules import ast
from rules import types as T
from rules.analysis import Report, analyze
from rules.checker import ExprChecker, Problem
from rules.diagnostics import Diagnostic, has_errors, sorted_diagnostics
from rules.engine import Engine, compile_ruleset
from rules.lexer import SyntaxProblem
from rules.loader import load_text
from rules.model import Expr, RuleSet
from rules.parser import parse
from rules.read import Draft, read
from rules.resolve import resolve

STAGES: tuple[str, ...] = ("load", "read", "parse", "check", "resolve", "analyse", "compile")

Checked = tuple[ast.Node, T.Type, list[Problem]]


def run(text: str, filename: str) -> tuple[RuleSet | None, list[Diagnostic], Report | None]:
    """load → read → parse → check → resolve → analyse: the rule set (None on errors), every
    diagnostic sorted by position, and the analysis report (None on errors)."""
    with _collector_paused():
        return _run(text, filename)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a file is read. Reading allocates one object per
    YAML node, position and rule (hundreds of thousands at the seed's scale), all of them live
    until the end: every pass the collector makes over them finds nothing, and those passes were
    half of `rules check` on a 2 MB file (53 s → 28 s, measured side by side on a loaded machine).
    Garbage with cycles made meanwhile is collected once the collector is back on."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _run(text: str, filename: str) -> tuple[RuleSet | None, list[Diagnostic], Report | None]:
    loaded = load_text(text, filename)
    if loaded.root is None:
        return None, sorted_diagnostics(loaded.diagnostics), None
    draft = read(loaded.root, loaded.source)
    draft.diagnostics.extend(loaded.diagnostics)
    if not draft.complete:
        return None, sorted_diagnostics(draft.diagnostics), None
    parse_stage(draft)
    used = check_stage(draft)
    ruleset = resolve(draft)
    if has_errors(draft.diagnostics):
        return None, sorted_diagnostics(draft.diagnostics), None
    report = analyze(ruleset, used)
    ruleset.warnings = report.warnings
    return ruleset, sorted_diagnostics([*draft.diagnostics, *report.warnings]), report


compile: Callable[[RuleSet], Engine] = compile_ruleset  # the last stage: `rules.engine`


# The trees of the last file parsed in this process, by expression text. A new version of a rules
# file mostly repeats the last one's expressions, and every node of a fleet parses each version
# once (issue 18: activation CPU is what 50 nodes on 2 cores queue for); the served rule set holds
# these trees anyway, so keeping them costs next to nothing. Replaced, not grown, by each file.
_last_parsed: dict[str, ast.Node] = {}


def parse_stage(draft: Draft) -> None:
    """Parses every expression found; each distinct text once (large files repeat conditions
    across sites and placements, and the tree is never changed, so it can be shared — also with
    the last file parsed, whose trees are reused for the texts it had)."""
    global _last_parsed
    last = _last_parsed
    memo: dict[str, ast.Node | SyntaxProblem] = {}
    for e in draft.exprs:
        hit = memo.get(e.text)
        if hit is None:
            hit = last.get(e.text)
            if hit is None:
                try:
                    hit = parse(e.text)
                except SyntaxProblem as p:
                    hit = p
            memo[e.text] = hit
        if isinstance(hit, SyntaxProblem):
            draft.diagnostics.append(_diag(e, hit.start, hit.end, hit.code, hit.message))
            e.stage = "failed"
        else:
            e.tree, e.stage = hit, "parsed"
    _last_parsed = {t: n for t, n in memo.items() if not isinstance(n, SyntaxProblem)}


def check_stage(draft: Draft) -> set[str]:
    """Type-checks every parsed expression against the schema and the declared segments (each
    distinct text once), and what its place wants (a condition true/false, a score a number).
    Returns the segments some expression uses."""
    params = {name for site in draft.sites.values() for page in site.pages for name in page.params}
    checker = ExprChecker(draft.schema, draft.segments.names, params)
    memo: dict[str, Checked] = {}
    for e in draft.exprs:
        if e.stage != "parsed":
            continue
        hit = memo.get(e.text)
        if hit is None:
            hit = memo[e.text] = checker.check(e.tree, e.text)
        tree, typ, problems = hit
        for p in problems:
            draft.diagnostics.append(_diag(e, p.start, p.end, p.code, p.message, p.suggestion))
        wrong = None if problems else _unwanted(e, typ)
        if wrong is not None:
            draft.diagnostics.append(wrong)
        if problems or wrong is not None:
            e.stage = "failed"
        else:
            e.tree, e.type, e.stage = tree, typ, "checked"
    return set(checker.used_segments)


def _unwanted(e: Expr, typ: T.Type) -> Diagnostic | None:
    """A condition must be true/false and a score a number, whatever else the expression is."""
    if e.want is not None and e.want.kind == "bool" and typ.kind not in ("bool", "any"):
        return _diag(
            e,
            0,
            len(e.text),
            "type-mismatch",
            f"{e.what} must be true or false, but this is a {typ}",
            'compare it with something, e.g. `… > 0` or `… == "x"`',
        )
    if e.want is not None and e.want.kind == "number" and not T.is_numeric(typ):
        return _diag(e, 0, len(e.text), "type-mismatch", f"{e.what} must be a number, not a {typ}")
    return None


def _diag(
    e: Expr, start: int, end: int, code: str, message: str, suggestion: str | None = None
) -> Diagnostic:
    """A problem at offsets of the expression's text, placed in the file."""
    source = e.origin.source
    line, col = e.origin.position(start)
    end_line, end_col = e.origin.position(max(start, end - 1))
    end_col = end_col + 1 if end_line == line else len(source.line_text(line)) + 1
    return Diagnostic(
        file=source.filename,
        line=line,
        col=col,
        end_col=max(end_col, col + 1),
        severity="error",
        code=code,
        message=message,
        suggestion=suggestion,
        source_line=source.line_text(line),
    )
