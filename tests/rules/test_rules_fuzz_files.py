"""Whole rules files of random shape: diagnostics, never an exception."""

from __future__ import annotations

import json
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rules_fakes import ctx

import rules

KEYS = [
    "schema",
    "attributes",
    "segments",
    "sites",
    "default",
    "placements",
    "p",
    "rules",
    "id",
    "when",
    "then",
    "variant",
    "content",
    "tags",
    "type",
    "limit",
    "rank",
    "exclude",
    "ids",
    "strategy",
    "score",
    "experiments",
    "arms",
    "weight",
    "name",
    "salt",
    "placement",
    "holdout",
    "actions",
    "webhook",
    "url",
    "method",
    "priority",
    "prepend",
    "append",
    "locales",
    "ttl",
    "defaults",
    "values",
    "interests",
    "any_tags",
    "locale",
    "sites",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 200),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            "true",
            "p",
            "gold",
            "first_match",
            "score_sorted",
            "profile.ltv > 1",
            "segment.x",
            "https://x",
            "priority",
            "affinity",
            "views",
            "",
            "\x00",
        ]
    ),
)
documents = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=5),
    ),
    max_leaves=30,
)


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.dictionaries(st.sampled_from(KEYS), documents, max_size=6))
def test_random_files_never_crash_the_checker(doc: dict[str, object]) -> None:
    text = json.dumps(doc)  # NaN/Infinity are not JSON: the JSON reader must say so, not crash
    for name in ("f.json", "f.yaml"):
        ruleset, diags = rules.load(text, filename=name)
        for d in diags:
            assert d.line >= 1 and d.col >= 1 and d.message
        if ruleset is not None:
            engine = rules.compile_ruleset(ruleset)
            placements = sorted(ruleset.placement_names())
            decision = engine.decide(visitor_id="v", profile=None, ctx=ctx(), placements=placements)
            assert len(decision.placements) == len(placements)
