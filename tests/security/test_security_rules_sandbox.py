"""Rules reach values and nothing else (SPEC §5): every attempt to name a builtin, an attribute
of a Python object, a module or a file is a diagnostic, never code. And a rule cannot be turned
against the server by its input: a pattern whose matching time explodes on a hostile `ctx.path`
is refused when the rules are checked. (The names generated code can reach are audited in
tests/rules/test_rules_fuzz.py.)
"""

from __future__ import annotations

import time

import pytest

import rules
from server.offline.demo import DEMO_DIR

DEMO = (DEMO_DIR / "rules.yaml").read_text()
HOOK = "when: segment.runner\n"
assert HOOK in DEMO


def with_condition(expr: str) -> str:
    return DEMO.replace(HOOK, f"when: {expr!r}\n", 1)


ESCAPES = [
    "__import__('os')",
    "open('/etc/passwd')",
    "eval('1')",
    "exec('1')",
    "getattr(profile, 'id')",
    "profile.__class__",
    "profile.__dict__",
    "ctx.__class__.__mro__",
    "().__class__.__bases__",
    "''.__class__",
    "profile.tier.__class__",
    "profile.tier.format(1)",
    "profile.tier.join(['a'])",
    "lower.__globals__",
    "count.__code__",
    "segment.__init__",
    "recent.__dict__",
    "[x for x in profile]",
    "lambda: 1",
    "globals()",
    "vars()",
    "os.system('id')",
    "profile['__class__']",
    "ctx.geo.__class__",
]


@pytest.mark.parametrize("expr", ESCAPES)
def test_escapes_are_diagnostics_not_code(expr: str) -> None:
    ruleset, diagnostics = rules.load(with_condition(expr), filename="rules.yaml")
    assert ruleset is None or rules.has_errors(diagnostics), expr
    errors = [d for d in diagnostics if d.severity == "error"]
    assert errors and all(d.line > 1 and d.col >= 1 for d in errors), errors


@pytest.mark.parametrize("pattern", [r"^(a+)+$", r"([a-z]+-?)*$", r"^/(x|y+)+/$", r"((a*))*b"])
def test_exponential_patterns_are_refused(pattern: str) -> None:
    """Regression: `ctx.path.matches("^(a+)+$")` compiled, and a request for `/aaaa…a!` (30
    characters) held a worker for about a minute; no deadline can interrupt a regex search."""
    _, diagnostics = rules.load(
        with_condition(f'ctx.path.matches("{pattern}")'), filename="rules.yaml"
    )
    codes = [d.code for d in diagnostics if d.severity == "error"]
    assert "regex-backtracking" in codes, diagnostics


@pytest.mark.parametrize(
    "pattern", [r"^(?>a+)+$", r"^(a++)+$", r"^/[a-z]+([.][a-z]+)*$", r"^/(fr|de)/sale"]
)
def test_linear_patterns_compile_and_stay_fast_on_hostile_paths(pattern: str) -> None:
    ruleset, diagnostics = rules.load(
        with_condition(f'ctx.path.matches("{pattern}")'), filename="rules.yaml"
    )
    assert ruleset is not None and not rules.has_errors(diagnostics), diagnostics
    engine = rules.compile_ruleset(ruleset)
    hostile = "/" + "a" * 5000 + "!"
    started = time.perf_counter()
    decision = engine.decide(
        visitor_id=None,
        profile=None,
        ctx=rules.Context(site="shop-fr", path=hostile, url=hostile),
        placements=["home_hero"],
    )
    assert time.perf_counter() - started < 0.5
    assert decision.placements[0].placement == "home_hero"
