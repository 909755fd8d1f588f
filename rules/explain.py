"""Explain mode: the trace of a decision — segments, each rule tried with each condition's
value, the default, fallbacks, the experiment arm and the content picked.

It runs on a path of its own, after the decision and from it (`Engine.decide(explain=True)`), so
the hot path has no explain checks and a decision is the same with or without explain. Conditions
are evaluated again (short-circuited ones too) with a clock cell of their own, so explaining does
not change when the decision expires.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from rules import ast
from rules.bucketing import HOLDOUT
from rules.decision import Condition, Decision, PlacementDecision, TraceEntry, TraceValue
from rules.model import PickSpec, Rule
from rules.program import Program

# (program, sub-expression) → its value for this request, or "error: …"
Evaluate = Callable[[Program, ast.Node], TraceValue]
# program → the exception its function raises for this request (rule_error fallbacks)
Failure = Callable[[Program], str]


def trace(
    d: Decision,
    programs: Mapping[str, Program],
    segments: Sequence[tuple[str, bool]],
    evaluate: Evaluate,
    failure: Failure,
    segment_conditions: Callable[[str], list[Condition]] | None = None,
) -> list[TraceEntry]:
    """Segments first (computed once for the request, before any placement) — each with its
    conditions, so a reader can see why it matched or not — then each placement's steps in the
    order the engine took them."""
    out = [
        TraceEntry(
            "*", "segment", name, value, segment_conditions(name) if segment_conditions else []
        )
        for name, value in segments
    ]
    for pd in d.placements:
        prog = programs.get(pd.placement)
        if prog is not None:
            out.extend(_placement(pd, prog, evaluate, failure))
    return out


def _placement(
    pd: PlacementDecision, prog: Program, evaluate: Evaluate, failure: Failure
) -> list[TraceEntry]:
    name = pd.placement
    if pd.fallback == "deadline":
        return [TraceEntry(name, "fallback", None, False, note="deadline passed")]
    last = len(prog.rules) - 1
    if pd.fallback is not None:
        entries = _rules(prog, last, evaluate)
        note = f"rule error: {failure(prog)}"
        return [*entries, TraceEntry(name, "fallback", None, False, note=note)]
    idx = next((i for i, r in enumerate(prog.rules) if r.id == pd.rule), -1)
    if idx >= 0 and prog.placement.strategy == "first_match":
        last = idx
    entries = _rules(prog, last, evaluate)
    rule = prog.rules[idx] if idx >= 0 else None
    if rule is None:
        entries.append(TraceEntry(name, "default", None, True, note="no rule matched"))
    if pd.experiment is not None:
        entries.append(TraceEntry(name, "experiment", pd.experiment, True, note=f"arm {pd.arm}"))
    if _pick(prog, rule, pd) is not None:
        entries.append(
            TraceEntry(name, "content", None, bool(pd.content), note=", ".join(pd.content))
        )
    return entries


def _pick(prog: Program, rule: Rule | None, pd: PlacementDecision) -> PickSpec | None:
    """The content pick the decision used: the outcome's, or its arm's."""
    spec = (rule.then if rule is not None else prog.placement.default).content
    if pd.experiment is None or pd.arm == HOLDOUT:
        return spec
    for exp, _ in prog.experiments:
        if exp.id == pd.experiment:
            arm = next((a for a in exp.arms if a.name == pd.arm), None)
            return (arm.content if arm is not None else None) or spec
    return spec


def _rules(prog: Program, last: int, evaluate: Evaluate) -> list[TraceEntry]:
    name = prog.placement.name
    out: list[TraceEntry] = []
    for rule in prog.rules[: last + 1]:
        if rule.when is None:
            out.append(TraceEntry(name, "rule", rule.id, True, note="no condition"))
            continue
        text = rule.when.text
        conditions = [
            Condition(_unwrap(text[leaf.start : leaf.end]), evaluate(prog, leaf))
            for leaf in _leaves(rule.when.tree)
        ]
        whole = evaluate(prog, rule.when.tree)
        out.append(TraceEntry(name, "rule", rule.id, whole is True, conditions))
    return out


def conditions_of(
    text: str, tree: ast.Node, value: Callable[[ast.Node], TraceValue]
) -> list[Condition]:
    """The conditions of an expression (its and/or/not operands) with their values."""
    return [Condition(_unwrap(text[leaf.start : leaf.end]), value(leaf)) for leaf in _leaves(tree)]


def _leaves(node: ast.Node) -> list[ast.Node]:
    """The conditions explain mode reports: operands of and/or/not, down to comparisons."""
    out: list[ast.Node] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, ast.Binary) and n.op in ("and", "or"):
            stack.append(n.right)
            stack.append(n.left)
        elif isinstance(n, ast.Unary) and n.op == "not":
            stack.append(n.operand)
        else:
            out.append(n)
    return out


def _unwrap(text: str) -> str:
    """`(a == b)` → `a == b` when the brackets enclose the whole condition."""
    while text.startswith("(") and text.endswith(")"):
        depth = 0
        for i, ch in enumerate(text):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0 and i < len(text) - 1:
                return text
        text = text[1:-1].strip()
    return text


def value_of(v: object) -> TraceValue:
    if v is None or isinstance(v, bool | int | float):
        return v
    if isinstance(v, str):
        return v if len(v) <= 200 else v[:200] + "…"
    if isinstance(v, list | tuple | frozenset | set):
        items = sorted(v, key=str) if isinstance(v, frozenset | set) else list(v)
        return [
            x if x is None or isinstance(x, str | int | float | bool) else str(x)
            for x in items[:50]
        ]
    return str(v)[:200]
