"""Whole rules files, mutated from the demo's: diagnostics with positions, or a ruleset that
compiles and decides on real snapshot data — never an exception escaping `rules.load`, the
compiler or the engine. Complements tests/rules (random documents and random expressions): here the
input is a real, rich file one edit away from valid, where a front end's corner cases live.

Mutations are line-level (delete, duplicate, swap, re-indent), token-level (replace a token with
another from the file, or with a grammar-aware expression), and byte-level (flip, cut, insert).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rules
import snapshots
from server.offline.demo import DEMO_DIR
from snapshots import store
from tests.provekit import bounded, prove_data

# In the second test stream (tests/run-streams), which balances the two.
pytestmark = pytest.mark.slow

__all__ = ["prove_data"]

SOURCE = (DEMO_DIR / "rules.yaml").read_text()
LINES = SOURCE.splitlines(keepends=True)
TOKEN = re.compile(r"[A-Za-z_][A-Za-z_0-9.]*|[<>=!]=?|\d+(?:\.\d+)?|\"[^\"]*\"")
TOKENS = sorted(set(TOKEN.findall(SOURCE)))

ATOMS = [
    "profile.tier", "profile.ltv", "profile.interests.running", "profile.segments",
    "profile.counters.orders", "profile.last_seen['category:shoes']", "profile.nope",
    "ctx.hour", "ctx.path", "ctx.geo.country", "ctx.consent", "ctx.url", "segment.runner",
    "segment.unknown", "recent.cart", "recent.views", '"gold"', "0", "-1", "1e308", "1e999",
    "null", "true", "[1, 2]", "[]", "__import__", "open", "().__class__", "profile.__dict__",
]  # fmt: skip
FORMS = [
    "{} and {}", "{} or {}", "not {}", "{} == {}", "{} < {}", "{} + {}", "{} / {}", "{} % {}",
    "{} ** {}", "{} in {}", "count({})", "days_since({})", "has({}, {})", "({})",
    '{}.startswith("a")', '{}.matches("(a+)+$")', "{}[0]", "{}.{}", "{}({})",
]  # fmt: skip


def expressions() -> st.SearchStrategy[str]:
    def grow(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.builds(
            lambda form, args: form.format(*args[: form.count("{}")]),
            st.sampled_from(FORMS),
            st.lists(inner, min_size=2, max_size=2),
        )

    return st.recursive(st.sampled_from(ATOMS), grow, max_leaves=8)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    lines = list(LINES)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["del", "dup", "swap", "indent", "token", "expr", "byte", "cut"]))
        i = draw(st.integers(0, len(lines) - 1))
        if op == "del":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "indent":
            lines[i] = " " * draw(st.sampled_from([0, 1, 3, 12])) + lines[i].lstrip(" ")
        elif op == "token":
            old = draw(st.sampled_from(TOKENS))
            lines = "".join(lines).replace(old, draw(st.sampled_from(TOKENS)), 1).splitlines(True)
        elif op == "expr":
            whens = [k for k, line in enumerate(lines) if "when:" in line or "score:" in line]
            k = draw(st.sampled_from(whens)) if whens else i
            key, _, _ = lines[k].partition(":")
            lines[k] = f"{key}: {draw(expressions())!r}\n"
        elif op == "byte":
            raw = bytearray("".join(lines).encode()) or bytearray(b" ")
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
            lines = raw.decode("utf-8", "replace").splitlines(True)
        else:
            text = "".join(lines)
            lines = [text[: draw(st.integers(0, len(text)))]]
        if not lines:
            lines = [""]
    return "".join(lines)


@pytest.fixture(scope="module")
def world(prove_data: Path) -> Iterator[tuple[list[snapshots.Profile], snapshots.ContentReader]]:
    profiles_path = store.active_path(prove_data, "profiles")
    content_path = store.active_path(prove_data, "content")
    assert profiles_path is not None and content_path is not None
    with snapshots.open_profiles(profiles_path) as profiles:
        sample = profiles.sample(40)
    content = snapshots.open_content(content_path)
    yield sample, content
    content.close()


CONTEXTS = [
    rules.Context(site="shop-fr", hour=23, geo=rules.Geo(country="FR"), now=1_790_000_000.0),
    rules.Context(site="default", consent=False, now=0.0, timezone="Nowhere/Else"),
    rules.Context(site="shop-de", locale="de-DE", path="/sale", now=253402300799.0),
]


@settings(
    max_examples=bounded("EDGESIDE_FUZZ_EXAMPLES", 250),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=mutated())
def test_mutated_demo_rules_give_diagnostics_or_working_code(
    world: tuple[list[snapshots.Profile], snapshots.ContentReader], text: str
) -> None:
    profiles, content = world
    ruleset, diagnostics = rules.load(text, filename="rules.yaml")
    for d in diagnostics:
        assert d.line >= 1 and d.col >= 1 and d.message, d
    if ruleset is None or rules.has_errors(diagnostics):
        assert diagnostics, "refused without saying why"
        return
    engine = rules.compile_ruleset(ruleset)
    for ctx in CONTEXTS:
        placements = sorted(ruleset.placement_names())[:8] or ["home_hero"]
        for profile in profiles[:10]:
            decision = engine.decide(
                visitor_id=profile.id,
                profile=profile,
                ctx=ctx,
                placements=placements,
                content=content,
                recent=None,
            )
            assert [p.placement for p in decision.placements] == placements
            assert decision.key
