"""Random and mutated expressions: diagnostics or valid code — never an escaping exception, and
generated code that can reach nothing but the allowed names."""

from __future__ import annotations

import json
import os
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rules_fakes import ALICE, Profile, ctx

import rules
from rules.compiler import ALLOWED_ATTRIBUTES, HELPERS, code_objects
from rules.lexer import SyntaxProblem
from rules.parser import parse

ATOMS = [
    "profile.tier",
    "profile.ltv",
    "profile.newsletter",
    "profile.interests.running",
    'profile.last_seen["category:shoes"]',
    "profile.segments",
    "profile.counters.orders",
    "ctx.hour",
    "ctx.path",
    "ctx.geo.country",
    "ctx.consent",
    "segment.gold",
    "recent.views",
    "recent.categories.shoes",
    '"gold"',
    '"/sale"',
    "3",
    "2.5",
    "true",
    "null",
    '["a", "b"]',
    "profile.tierr",
    "segment.nope",
    "ctx.nothing",
    "x",
]
UNARY = [
    "not {}",
    "-{}",
    "({})",
    "count({})",
    "days_since({})",
    "lower({})",
    '{}.startswith("a")',
    '{}.matches("^a+$")',
    "{}.lower()",
    '{}.contains("x")',
]
BINARY = [
    "{} and {}",
    "{} or {}",
    "{} == {}",
    "{} != {}",
    "{} < {}",
    "{} >= {}",
    "{} in {}",
    "{} not in {}",
    "{} + {}",
    "{} - {}",
    "{} * {}",
    "{} / {}",
    "{} % {}",
    "has({}, {})",
]

expressions = st.recursive(
    st.sampled_from(ATOMS),
    lambda inner: st.one_of(
        st.tuples(st.sampled_from(UNARY), inner).map(lambda t: t[0].format(t[1])),
        st.tuples(st.sampled_from(BINARY), inner, inner).map(lambda t: t[0].format(t[1], t[2])),
    ),
    max_leaves=12,
)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(expressions)
    for _ in range(draw(st.integers(0, 3))):
        if not text:
            break
        i = draw(st.integers(0, len(text) - 1))
        op = draw(st.sampled_from(["del", "ins", "rep"]))
        ch = draw(st.sampled_from(list("()[].,\"'=<>!+-*/% \\\x00\x07\u2028aZ0_")))
        if op == "del":
            text = text[:i] + text[i + 1 :]
        elif op == "ins":
            text = text[:i] + ch + text[i:]
        else:
            text = text[:i] + ch + text[i + 1 :]
    return text


NUMBERS = [
    "profile.ltv",
    "profile.interests.running",
    "ctx.hour",
    "count(recent.views)",
    "profile.counters.orders",
    "days_since(profile.last_seen.x)",
    "1",
    "2.5",
    "-3",
]
CONDITIONS = [
    'profile.tier == "gold"',
    "segment.gold",
    "ctx.consent",
    "profile.newsletter",
    '"a" in profile.segments',
    'ctx.path.startswith("/s")',
    "profile.tier == null",
]
numbers = st.recursive(
    st.sampled_from(NUMBERS),
    lambda inner: st.tuples(inner, st.sampled_from("+-*/%"), inner).map(
        lambda t: f"({t[0]} {t[1]} {t[2]})"
    ),
    max_leaves=4,
)
comparisons = st.tuples(numbers, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), numbers).map(
    lambda t: f"{t[0]} {t[1]} {t[2]}"
)
conditions = st.recursive(
    st.one_of(st.sampled_from(CONDITIONS), comparisons),
    lambda inner: st.one_of(
        inner.map(lambda x: f"not ({x})"),
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
    ),
    max_leaves=6,
)

any_text = st.one_of(conditions, numbers, expressions, mutated(), st.text(max_size=80))

ALLOWED = ALLOWED_ATTRIBUTES | set(HELPERS)
_REGEX_GLOBAL = re.compile(r"^_re\d+$")

ODD = Profile("odd", {"tier": 3, "ltv": "x", "newsletter": "yes"}, {"running": "high"})  # type: ignore[dict-item]


def rules_file(expr: str, score: str = "1") -> str:
    doc = {
        "schema": {
            "attributes": {"tier": {"type": "string"}, "ltv": "number", "newsletter": "bool"}
        },
        "segments": {"gold": 'profile.tier == "gold"'},
        "sites": {
            "default": {
                "placements": {
                    "p": {"default": "d", "rules": [{"id": "r", "when": expr, "then": "y"}]},
                    "s": {
                        "strategy": "score_sorted",
                        "default": "d",
                        "rules": [{"id": "r", "when": "true", "score": score, "then": "y"}],
                    },
                }
            }
        },
        "actions": [{"id": "a", "when": expr}],
    }
    return json.dumps(doc)


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(any_text)
def test_parser_raises_only_syntax_problems(text: str) -> None:
    try:
        parse(text)
    except SyntaxProblem as p:
        assert 0 <= p.start <= max(len(text), 1)


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(any_text)
def test_whole_pipeline_gives_diagnostics_or_safe_code(expr: str) -> None:
    for text in (rules_file(expr), rules_file("true", score=expr)):
        check_pipeline(expr, text)


def check_pipeline(expr: str, text: str) -> bool:
    """Load one generated file; when it checks, compile it, audit the code and decide with it.
    True when the file reached the compiler."""
    ruleset, diags = rules.load(text, filename="fuzz.json")
    if ruleset is None:
        errors = [d for d in diags if d.severity == "error"]
        assert errors
        for d in errors:
            assert d.line >= 1 and d.col >= 1 and d.end_col > d.col and d.message
        return False
    engine = rules.compile_ruleset(ruleset)
    for fn in _functions(engine):
        for code in code_objects(fn):
            for name in code.co_names:
                assert name in ALLOWED or _REGEX_GLOBAL.match(name), (expr, name)
    for profile in (ALICE, ODD, None):
        d = engine.decide(
            visitor_id="v", profile=profile, ctx=ctx(path="/a"), placements=["p", "s"], explain=True
        )
        assert [p.placement for p in d.placements] == ["p", "s"]
        assert d.placements[0].variant in ("y", "d")
    return True


def _functions(engine: rules.Engine) -> list[object]:
    fns: list[object] = []
    for progs in engine._table.values():
        fns.extend(p.fn for p in progs.values())
    fns.extend(f for f in (engine._segments_fn, engine._actions_fn) if f is not None)
    return fns


def test_the_fuzzer_reaches_the_compiler() -> None:
    # A fuzzer that only produced errors would prove little: draw a fixed sample of its own
    # (derandomized, so the count is the same on every run) and count the files that compile.
    reached: list[str] = []

    @settings(max_examples=200, derandomize=True, database=None, deadline=None)
    @given(any_text)
    def sample(expr: str) -> None:
        if check_pipeline(expr, rules_file(expr)):
            reached.append(expr)

    sample()
    assert len(reached) > 20, len(reached)


def test_generated_code_cannot_reach_builtins() -> None:
    ruleset, _ = rules.load(rules_file('profile.tier == "gold"'), filename="x.json")
    assert ruleset is not None
    engine = rules.compile_ruleset(ruleset)
    for fn in _functions(engine):
        assert fn.__globals__["__builtins__"] == {}  # type: ignore[attr-defined]


def test_names_in_expressions_never_become_python_names() -> None:
    # `__import__`, `open` … are just unknown names to the checker.
    for expr in ['__import__("os")', "open(1)", "profile.__class__", "ctx.__dict__", "eval(1)"]:
        ruleset, diags = rules.load(rules_file(expr), filename="x.json")
        assert ruleset is None and diags
