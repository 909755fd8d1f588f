"""The built-in functions and methods (`rules.builtins`): every argument is typed by the checker.

Issue 14: `has(ctx.site, 1)` passed `rules check` and then failed every request. The checker now
types every argument of every built-in from its one description; what it accepts runs without a
rule error, and what it refuses is reported with file:line:col, the offending text and a fix.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from rules_fakes import ALICE, ctx, diagnostics, engine_from, one_rule

import rules
from rules.builtins import FUNCTIONS, METHODS, Builtin
from rules.compiler import EMITTERS
from server.cli import main

# One call of each built-in with one argument of the wrong type: (condition, offending text,
# a fragment of the message).
WRONG: dict[tuple[bool, str], list[tuple[str, str, str]]] = {
    (False, "days_since"): [("days_since(ctx.site) > 1", "ctx.site", "needs a timestamp")],
    (False, "count"): [("count(profile.ltv) > 1", "profile.ltv", "needs a list")],
    (False, "has"): [
        ('has(profile.ltv, "x")', "profile.ltv", "needs a list first"),
        ("has(ctx.site, 1)", "1", "looks for a string in `ctx.site`"),
        ("has(profile.segments, 1)", "1", "looks for a string in `profile.segments`"),
        ("has(profile.interests, 2.5)", "2.5", "looks for a string in `profile.interests`"),
        ('has([1, 2], "x")', '"x"', "looks for a int in `[1, 2]`"),
    ],
    (False, "lower"): [('lower(profile.ltv) == "x"', "profile.ltv", "needs a string")],
    (True, "startswith"): [
        ('profile.ltv.startswith("a")', "profile.ltv", "works on strings"),
        ("ctx.path.startswith(1)", "1", "needs a string argument"),
    ],
    (True, "endswith"): [
        ('profile.ltv.endswith("a")', "profile.ltv", "works on strings"),
        ("ctx.path.endswith(true)", "true", "needs a string argument"),
    ],
    (True, "contains"): [
        ('profile.ltv.contains("a")', "profile.ltv", "works on strings, lists and maps"),
        ("ctx.path.contains(3)", "3", "looks for a string in `ctx.path`"),
        ("profile.segments.contains(3)", "3", "looks for a string in `profile.segments`"),
    ],
    (True, "matches"): [
        ('profile.ltv.matches("a")', "profile.ltv", "works on strings"),
        ("ctx.path.matches(1)", "1", "needs a string argument"),
    ],
    (True, "lower"): [('profile.ltv.lower() == "x"', "profile.ltv", "works on strings")],
}

ALL = {
    **{(False, n): b for n, b in FUNCTIONS.items()},
    **{(True, n): b for n, b in METHODS.items()},
}


def test_every_builtin_has_wrong_argument_cases() -> None:
    assert set(WRONG) == set(ALL)


def test_every_builtin_compiles_through_one_emitter() -> None:
    assert set(EMITTERS) == set(ALL)


@pytest.mark.parametrize(
    ("expr", "offending", "fragment"),
    [case for cases in WRONG.values() for case in cases],
)
def test_a_wrong_argument_type_is_an_error_at_the_argument(
    expr: str, offending: str, fragment: str
) -> None:
    text = one_rule(expr)
    errors = [d for d in diagnostics(text) if d.severity == "error"]
    assert len(errors) == 1, [rules.render(d) for d in errors]
    d = errors[0]
    assert d.code == "type-mismatch" and fragment in d.message, d.message
    # Positioned on the offending argument, in the file.
    line = next(i for i, t in enumerate(text.splitlines(), 1) if expr in t)
    col = text.splitlines()[line - 1].index(expr) + expr.index(offending) + 1
    assert (d.line, d.col, d.end_col) == (line, col, col + len(offending)), rules.render(d)
    assert d.source_line[d.col - 1 : d.end_col - 1] == offending
    assert d.suggestion, d


def test_a_literal_that_needs_quotes_gets_the_call_rewritten() -> None:
    [d] = diagnostics(one_rule("has(ctx.site, 1)"))
    assert d.suggestion == 'write the value as text, in quotes: `has(ctx.site, "1")`'
    [d] = diagnostics(one_rule("ctx.path.endswith(true)"))
    assert d.suggestion == 'write the value as text, in quotes: `ctx.path.endswith("true")`'
    [d] = diagnostics(one_rule("count(profile.ltv) > 1"))
    assert d.suggestion == "for example `count(recent.views) > 3`"


@pytest.mark.parametrize("builtin", list(ALL.values()), ids=lambda b: b.label)
def test_each_example_checks_and_runs(builtin: Builtin) -> None:
    # The example a suggestion shows must itself be right.
    eng = engine_from(one_rule(builtin.example.replace("'", "''")))
    d = eng.decide(visitor_id="v", profile=ALICE, ctx=ctx(path="/p/1"), placements=["p"])
    assert d.rule_errors == 0


# One value of every type the language has.
VALUES = [
    "ctx.site",  # string, never null
    "ctx.path",  # string, null here
    '"a"',
    "1",
    "1.5",
    "true",
    "null",
    "ctx.now",  # timestamp
    "profile.segments",  # list of string
    "[1, 2]",  # list of int
    "profile.interests",  # map of number
]


def _calls(b: Builtin) -> list[str]:
    out = []
    for values in itertools.product(VALUES, repeat=len(b.params)):
        if b.method:
            receiver = values[0] if values[0][0].isalpha() else f"({values[0]})"
            out.append(f"{receiver}.{b.name}({', '.join(values[1:])})")
        else:
            out.append(f"{b.name}({', '.join(values)})")
    return out


@pytest.mark.parametrize("builtin", list(ALL.values()), ids=lambda b: b.label)
def test_what_the_checker_accepts_never_fails_at_run_time(builtin: Builtin) -> None:
    accepted = 0
    for call in _calls(builtin):
        cond = f"{call} == {call}" if builtin.result.kind != "bool" else call
        ruleset, diags = rules.load(one_rule(cond), filename="t.yaml")
        if ruleset is None:
            assert any(d.code == "type-mismatch" or d.code == "regex" for d in diags), call
            continue
        accepted += 1
        eng = rules.compile_ruleset(ruleset)
        for profile in (ALICE, None):
            d = eng.decide(visitor_id="v", profile=profile, ctx=ctx(), placements=["p"])
            assert d.rule_errors == 0, call
    assert accepted > 0


def test_rules_check_refuses_has_of_a_site_and_a_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(
        "sites:\n  default:\n    placements:\n      hero:\n        default: d\n"
        "        rules:\n          - {id: r, when: 'has(ctx.site, 1)', then: v}\n"
    )
    assert main(["rules", "check", str(f)]) == 1
    out = capsys.readouterr().out
    assert f"{f}:7:42: error[type-mismatch]:" in out, out
    assert "`has` looks for a string in `ctx.site` (a string), but `1` is a int" in out
    assert "has(ctx.site, 1)" in out and "^" in out
    assert 'help: write the value as text, in quotes: `has(ctx.site, "1")`' in out
