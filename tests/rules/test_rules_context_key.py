"""`Engine.context_key`: only the context fields the rules and the engine can read — and every one
of those, so that contexts with equal keys get equal decisions (the server's memo relies on it)."""

from __future__ import annotations

import ast as py
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from rules_fakes import (
    ALICE,
    BRUNO,
    CHLOE,
    NOW,
    SCHEMA,
    Activity,
    Profile,
    ctx,
    demo_catalog,
    one_rule,
)

import rules
from rules import Context, Geo
from rules.compiler import Shared, _locate
from rules.context import KEY_FIELDS, key_function
from rules.engine import ENGINE_FIELDS

DEMO = Path(__file__).resolve().parents[2] / "server" / "offline" / "demo_data" / "rules.yaml"
PAGE = ["home_hero", "home_recs", "article_sidebar", "cart_upsell"]
# Country-only rules: a placement, a segment and an action, each reading ctx.geo.country.
COUNTRY = (
    SCHEMA
    + """
segments:
  french: ctx.geo.country == "FR"
sites:
  default:
    placements:
      p:
        default: no
        rules:
          - {id: r, when: 'ctx.geo.country in ["DE", "AT"]', then: de}
          - {id: s, when: segment.french, then: fr}
actions:
  - {id: a, when: 'ctx.geo.country == "US"'}
"""
)


def engine_of(text: str) -> rules.Engine:
    ruleset, diags = rules.load(text, filename="t.yaml")
    assert ruleset is not None, rules.render_all(diags)
    return rules.compile_ruleset(ruleset)


def decide(eng: rules.Engine, c: Context, profile: Profile | None = ALICE) -> rules.Decision:
    return eng.decide(
        visitor_id=profile.id if profile else "v", profile=profile, ctx=c, placements=["p"]
    )


# -- which fields -----------------------------------------------------------------------------


def test_country_only_rules_key_on_country() -> None:
    eng = engine_of(COUNTRY)
    assert eng.context_fields == ("site", "locale", "geo.country", "consent")
    a = ctx(geo={"country": "FR"}, url="https://x/a?q=1", path="/a", referrer="r1", device="m")
    b = ctx(geo={"country": "FR", "city": "Lyon"}, url="https://x/b", path="/b", device="desktop")
    b.timezone, b.weather, b.hour, b.weekday = "Asia/Tokyo", "rain", 3, 6
    assert eng.context_key(a) == eng.context_key(b)
    assert decide(eng, a) == decide(eng, b)
    assert decide(eng, a).placements[0].variant == "fr"
    for country in ("DE", "US", None):
        c = ctx(geo={"country": country}, url="https://x/a?q=1", path="/a")
        assert eng.context_key(c) != eng.context_key(a)
        assert decide(eng, c) != decide(eng, a)


@pytest.mark.parametrize(
    ("when", "fields"),
    [
        ('ctx.url.startswith("https://shop")', {"url"}),
        ('ctx.path.matches("^/sale")', {"path"}),
        ('lower(ctx.referrer) == "x"', {"referrer"}),
        ('ctx.device == "mobile"', {"device"}),
        ('ctx.weather == "rain"', {"weather"}),
        ('ctx.timezone == "UTC"', {"timezone"}),
        ('ctx.geo.region == "IDF"', {"geo.region"}),
        ('ctx.geo.city == "Paris"', {"geo.city"}),
        ("ctx.hour >= 22", {"hour", "timezone"}),
        ("ctx.weekday == 5", {"weekday", "timezone"}),
        ("ctx.now > 0", set()),  # `now` is expires' to bound
        ('ctx.site == "x" and ctx.locale == "y" and ctx.consent', set()),
        ("profile.interests[ctx.device] > 0.5", {"device"}),
        ('profile.country == "FR" and profile.tags.contains("city")', set()),
        ("profile.ltv > 10", set()),
    ],
)
def test_fields_read(when: str, fields: set[str]) -> None:
    eng = engine_of(one_rule(when))
    assert set(eng.context_fields) == {*ENGINE_FIELDS, *fields}
    assert list(eng.context_fields) == [f for f in KEY_FIELDS if f in eng.context_fields]


def test_engine_fields_always_in_the_key() -> None:
    eng = engine_of(one_rule("profile.ltv > 10"))
    assert eng.context_fields == ("site", "locale", "consent")
    base = ctx()
    for other in (ctx(site="shop-fr"), ctx(locale="fr-FR"), ctx(consent=False)):
        assert eng.context_key(other) != eng.context_key(base)
    # consent alone changes the decision of a rule that reads only the profile
    assert decide(eng, ctx(consent=False)) != decide(eng, base)


def test_a_url_rule_changes_with_the_url() -> None:
    eng = engine_of(one_rule('ctx.url.contains("sale")'))
    a, b = ctx(url="https://x/sale"), ctx(url="https://x/home")
    assert eng.context_key(a) != eng.context_key(b)
    assert decide(eng, a).placements[0].variant == "yes"
    assert decide(eng, b).placements[0].variant == "no"


def test_hour_rules_key_on_the_time_zone() -> None:
    eng = engine_of(one_rule("ctx.hour >= 22"))
    utc, paris = ctx(timezone="UTC"), ctx(timezone="Europe/Paris")  # 20:26 and 22:26
    assert eng.context_key(utc) != eng.context_key(paris)
    assert decide(eng, utc) != decide(eng, paris)
    assert eng.context_key(ctx(hour=23, timezone="UTC")) != eng.context_key(utc)


def test_segments_and_actions_count() -> None:
    seg = SCHEMA + 'segments:\n  m: ctx.device == "m"\nsites: {default: {placements: {}}}\n'
    assert "device" in engine_of(seg).context_fields
    act = (
        SCHEMA
        + 'sites: {default: {placements: {}}}\nactions:\n  - {id: a, when: ctx.weather == "x"}\n'
    )
    assert "weather" in engine_of(act).context_fields


def test_only_placements_of_other_sites_count_too() -> None:
    # The key is per rule set, not per site: a field read anywhere is in it.
    text = (
        SCHEMA
        + """
sites:
  default:
    placements:
      p: {default: no, rules: [{id: r, when: 'ctx.device == "m"', then: yes}]}
  other:
    placements:
      q: {default: no, rules: [{id: r, when: 'ctx.referrer == "m"', then: yes}]}
"""
    )
    assert {"device", "referrer"} <= set(engine_of(text).context_fields)


# -- how they are found -------------------------------------------------------------------------


def reads(source: str) -> frozenset[str]:
    return _locate(py.parse(source), set(), set(), set())


def test_fields_are_found_by_shape_not_by_name() -> None:
    assert reads("def f(X, A):\n  return X.geo.city == A.city") == {"geo.city"}
    assert reads("def f(X, A):\n  return A.city.country == X.url") == {"url"}
    assert reads("def f(X, H):\n  return H") == {"hour", "timezone"}
    assert reads("def f(X, NOW):\n  return X.now < NOW") == set()


def test_anything_unusual_reads_everything() -> None:
    geo = {f for f in KEY_FIELDS if f.startswith("geo.")}
    assert reads("def f(X, g):\n  return g(X)") == set(KEY_FIELDS)  # X passed on whole
    assert reads("def f(X):\n  return X.other") == set(KEY_FIELDS)  # a field not known
    assert reads("def f(X, g):\n  return g(X.geo) or X.geo.city") == geo
    assert reads("def f(X):\n  return X.geo.elsewhere") == geo


def test_functions_not_compiled_here_read_everything() -> None:
    def foreign(*args: object) -> bool:
        return False

    assert Shared().ctx_fields(foreign) == set(KEY_FIELDS)


def test_key_function() -> None:
    c = Context(site="s", locale="l", url="u", geo=Geo(city="c"), consent=False)
    assert key_function(["consent", "geo.city", "site"])(c) == ("s", "c", False)
    assert key_function(["url"])(c) == ("u",)
    assert key_function([])(c) == ()
    assert key_function(KEY_FIELDS)(c) == rules.context_key(c)
    with pytest.raises(ValueError):
        key_function(["now"])


# -- the demo rules: equal keys, equal decisions ------------------------------------------------


def demo_engine() -> rules.Engine:
    ruleset, diags = rules.load(DEMO)
    assert ruleset is not None, rules.render_all(diags)
    return rules.compile_ruleset(ruleset)


DEMO_ENGINE = demo_engine()
CATALOG = demo_catalog()


def test_demo_key_fields() -> None:
    # ctx.consent (gold_offer), ctx.hour (night_owl), ctx.geo.city (paris_runner); the engine's own;
    # the path, which finds the page (`pages:`) of a request naming no placements.
    fields = ("site", "locale", "path", "timezone", "geo.city", "hour", "consent")
    assert DEMO_ENGINE.context_fields == fields


def field_values(c: Context) -> dict[str, object]:
    return dict(zip(KEY_FIELDS, rules.context_key(c), strict=True))


def context_of(values: dict[str, object], now: float) -> Context:
    plain = {k: v for k, v in values.items() if "." not in k}
    geo = Geo(**{k[4:]: v for k, v in values.items() if k.startswith("geo.")})  # type: ignore[arg-type]
    return Context(**plain, geo=geo, now=now)  # type: ignore[arg-type]


def maybe(*values: object) -> st.SearchStrategy[object]:
    return st.sampled_from([None, *values])


CONTEXTS = st.fixed_dictionaries(
    {
        "site": st.sampled_from(["default", "shop-fr", "shop-de", "shop-uk", "elsewhere"]),
        "locale": maybe("fr-FR", "de-DE", "en-GB", "cy-GB"),
        "url": maybe("https://shop.example/a?x=1", "https://shop.example/b"),
        "path": maybe("/a", "/b", "/sale", "/", "/cart"),
        "referrer": maybe("https://search.example/?q=shoes", "https://news.example/"),
        "device": maybe("mobile", "desktop", "tablet"),
        "timezone": maybe("UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "No/Where"),
        "weather": maybe("rain", "sun"),
        "geo.country": maybe("FR", "DE", "GB", "US"),
        "geo.region": maybe("IDF", "BY"),
        "geo.city": maybe("Paris", "Lyon", "Berlin"),
        "hour": st.one_of(st.none(), st.integers(0, 23)),
        "weekday": st.one_of(st.none(), st.integers(0, 6)),
        "consent": st.booleans(),
    }
)
# 20:26 UTC Thursday (22:26 in Paris: night), Friday noon UTC, Saturday 23:59:30 UTC
INSTANTS = st.sampled_from([NOW, 1_780_056_000.0, 1_780_185_570.0])
PROFILES = st.sampled_from([ALICE, BRUNO, CHLOE, None])
RECENT = st.sampled_from([None, Activity(), Activity(cart=["p-gel"], views=["p-shoe"])])


@dataclass
class Case:
    a: Context
    b: Context
    profile: Profile | None
    visitor: str | None
    recent: Activity | None


@st.composite
def cases(draw: st.DrawFn, kept: tuple[str, ...]) -> Case:
    """Two contexts at the same instant: b takes a's value of every field in ``kept``, and of
    every other field its own draw (equal or not)."""
    a, other = draw(CONTEXTS), draw(CONTEXTS)
    now = draw(INSTANTS)
    b = {k: (a[k] if k in kept else other[k]) for k in KEY_FIELDS}
    profile = draw(PROFILES)
    visitor = profile.id if profile else draw(st.sampled_from([None, "anon-1", "anon-2", "x"]))
    return Case(context_of(a, now), context_of(b, now), profile, visitor, draw(RECENT))


def run(case: Case, c: Context) -> tuple[rules.Decision, rules.Decision]:
    """The named placements' decision, and the page's (placements named by `pages:`)."""
    return (
        DEMO_ENGINE.decide(
            visitor_id=case.visitor,
            profile=case.profile,
            ctx=c,
            placements=PAGE,
            content=CATALOG,  # type: ignore[arg-type]
            recent=case.recent,  # type: ignore[arg-type]
        ),
        DEMO_ENGINE.decide(
            visitor_id=case.visitor,
            profile=case.profile,
            ctx=c,
            placements=(),
            content=CATALOG,  # type: ignore[arg-type]
            recent=case.recent,  # type: ignore[arg-type]
        ),
    )


def differs(case: Case) -> bool:
    return run(case, case.a) != run(case, case.b)


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(cases(DEMO_ENGINE.context_fields))
def test_demo_equal_keys_give_equal_decisions(case: Case) -> None:
    assert DEMO_ENGINE.context_key(case.a) == DEMO_ENGINE.context_key(case.b)
    # placements, segments, actions, key, ttl, rule errors and expires all equal
    assert run(case, case.a) == run(case, case.b)


@pytest.mark.parametrize("dropped", DEMO_ENGINE.context_fields)
def test_demo_property_fails_without_any_key_field(dropped: str) -> None:
    # Every field of the demo key matters: leave one out and the property finds a counterexample.
    kept = tuple(f for f in DEMO_ENGINE.context_fields if f != dropped)
    found = find(
        cases(kept),
        differs,
        settings=settings(
            max_examples=2000,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.generate],  # any counterexample will do: no shrinking
        ),
    )
    assert field_values(found.a)[dropped] != field_values(found.b)[dropped]


# With the placements named, the demo's path only chose placements of requests naming none: the
# decision memo's key leaves it out (`Engine.named_context_key`), so a page view on a site of
# thousands of pages can share a decision.
NAMED_FIELDS = tuple(f for f in DEMO_ENGINE.context_fields if f != "path")


def test_demo_named_key_leaves_out_the_path_only_with_placements_named() -> None:
    a, b = ctx(path="/a", url="/a"), ctx(path="/b", url="/b")
    assert DEMO_ENGINE.named_context_key(a, PAGE) == DEMO_ENGINE.named_context_key(b, PAGE)
    assert DEMO_ENGINE.named_context_key(a, ()) != DEMO_ENGINE.named_context_key(b, ())
    assert DEMO_ENGINE.named_context_key(a, ()) == DEMO_ENGINE.context_key(a)
    for other in (ctx(site="shop-fr"), ctx(consent=False), ctx(geo={"city": "Paris"})):
        assert DEMO_ENGINE.named_context_key(other, PAGE) != DEMO_ENGINE.named_context_key(a, PAGE)
    # A rule reading the path keeps it in the key.
    eng = engine_of(one_rule('ctx.path.matches("^/sale")'))
    assert eng.named_context_key(ctx(path="/sale"), ["p"]) != eng.named_context_key(a, ["p"])


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(cases(NAMED_FIELDS))
def test_demo_equal_named_keys_give_equal_decisions_of_named_placements(case: Case) -> None:
    assert DEMO_ENGINE.named_context_key(case.a, PAGE) == DEMO_ENGINE.named_context_key(
        case.b, PAGE
    )
    assert run(case, case.a)[0] == run(case, case.b)[0]


@pytest.mark.parametrize("dropped", NAMED_FIELDS)
def test_demo_named_property_fails_without_any_key_field(dropped: str) -> None:
    kept = tuple(f for f in NAMED_FIELDS if f != dropped)
    found = find(
        cases(kept),
        lambda case: run(case, case.a)[0] != run(case, case.b)[0],
        settings=settings(
            max_examples=2000,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.generate],
        ),
    )
    assert field_values(found.a)[dropped] != field_values(found.b)[dropped]


def test_the_full_key_still_covers_everything() -> None:
    # A field added to Context must be added to KEY_FIELDS (and context_key), or keys miss it.
    geo = {f"geo.{f}" for f in Geo.__struct_fields__}
    # (`params`, the page's template values, is made from `path` by the engine: keyed by it.)
    assert set(KEY_FIELDS) == {*Context.__struct_fields__, *geo} - {"now", "geo", "params"}
    c = ctx(url="a")
    assert rules.context_key(c) == tuple(field_values(c).values())
    assert len(rules.context_key(c)) == len(KEY_FIELDS)


# -- random rule sets: whatever they read, equal keys give equal decisions ----------------------

CTX_ATOMS = [
    'ctx.url == "https://shop.example/b"',
    'ctx.path.startswith("/s")',
    'lower(ctx.referrer).contains("news")',
    'ctx.device in ["mobile", "tablet"]',
    'ctx.timezone == "UTC"',
    'ctx.weather != "sun"',
    'ctx.geo.country == "FR"',
    'ctx.geo.region.matches("^I")',
    'ctx.geo.city == "Berlin"',
    "ctx.hour >= 21",
    "ctx.weekday == 4",
    'ctx.site == "shop-fr"',
    'ctx.locale == "cy-GB"',
    "ctx.consent",
    "profile.interests[ctx.device] > 0.1",
    "profile.interests.running >= 0.5",
    "segment.base",
]
ctx_conditions = st.recursive(
    st.sampled_from(CTX_ATOMS),
    lambda inner: st.one_of(
        inner.map(lambda x: f"not ({x})"),
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
    ),
    max_leaves=4,
)


def random_file(segment: str, placement: str, action: str) -> str:
    return (
        SCHEMA
        + f"""
segments:
  base: '{segment.replace("segment.base", "true")}'
sites:
  default:
    placements:
      p: {{default: no, rules: [{{id: r, when: '{placement}', then: yes}}]}}
actions:
  - {{id: a, when: '{action}'}}
"""
    )


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")) // 3,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.tuples(ctx_conditions, ctx_conditions, ctx_conditions),
    CONTEXTS,
    CONTEXTS,
    INSTANTS,
    st.sampled_from([ALICE, CHLOE, None]),
)
def test_random_rules_equal_keys_give_equal_decisions(
    conds: tuple[str, str, str],
    a: dict[str, object],
    other: dict[str, object],
    now: float,
    profile: Profile | None,
) -> None:
    eng = engine_of(random_file(*conds))
    b = {k: (a[k] if k in eng.context_fields else other[k]) for k in KEY_FIELDS}
    ca, cb = context_of(a, now), context_of(b, now)
    assert eng.context_key(ca) == eng.context_key(cb)
    assert decide(eng, ca, profile) == decide(eng, cb, profile)
