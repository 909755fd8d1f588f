"""`pages:`: patterns read and checked with positions, matched by the compiled trie, and a request
naming no placements decided with its page's."""

from __future__ import annotations

import pytest
from rules_fakes import ctx, diagnostics, engine_from

import rules
from rules.engine import NO_PLACEMENTS_KEY
from rules.pages import split_path

RULES = """
version: 1
sites:
  default:
    pages:
      - {path: /, placements: [hero]}
      - {path: "/product/{sku}", placements: [hero, recs], type: product}
      - {path: /product/*, placements: [recs]}
      - {path: "/{lang}/help", placements: [side]}
      - {path: /help/*, placements: [side]}
      - {path: /empty, placements: []}
    placements:
      hero: {default: plain}
      recs: {default: none}
      side: {default: faq}
  shop-fr:
    pages:
      - {path: /, placements: [side]}
"""


@pytest.mark.parametrize(
    ("site", "path", "pattern", "params"),
    [
        ("default", "/", "/", {}),
        ("default", "/product/42", "/product/{sku}", {"sku": "42"}),
        ("default", "/product/42/", "/product/{sku}", {"sku": "42"}),
        ("default", "/product/42?utm=x#top", "/product/{sku}", {"sku": "42"}),
        ("default", "/product", "/product/*", {}),
        ("default", "/product/42/reviews", "/product/*", {}),
        ("default", "/fr/help", "/{lang}/help", {"lang": "fr"}),
        # `/help/*` is written after `/{lang}/help`, which matches `/help/help` too: first wins.
        ("default", "/help/help", "/{lang}/help", {"lang": "help"}),
        ("default", "/help/x", "/help/*", {}),
        ("shop-fr", "/", "/", {}),  # the site's own page, before the inherited one
        ("shop-fr", "/product/1", "/product/{sku}", {"sku": "1"}),  # inherited
        ("nosuch", "/product/1", "/product/{sku}", {"sku": "1"}),  # unknown site: default's
    ],
)
def test_match(site: str, path: str, pattern: str, params: dict[str, str]) -> None:
    page = engine_from(RULES).page_for(site, path)
    assert page is not None
    assert (page.pattern, page.params) == (pattern, params)


@pytest.mark.parametrize("path", ["/nothing", "/product-x", "", "http://x/", "/" + "a" * 3000])
def test_no_match(path: str) -> None:
    assert engine_from(RULES).page_for("default", path) is None


def test_site_pages_come_first() -> None:
    engine = engine_from(RULES)
    assert engine.page_for("shop-fr", "/").placements == ("side",)  # type: ignore[union-attr]
    assert engine.page_for("default", "/").placements == ("hero",)  # type: ignore[union-attr]


def test_decide_takes_the_page_placements() -> None:
    engine = engine_from(RULES)
    d = engine.decide(visitor_id=None, profile=None, ctx=ctx(path="/product/9"), placements=[])
    assert [p.placement for p in d.placements] == ["hero", "recs"]
    assert d.unplaced is None
    # Explicit placements win over the page's.
    d = engine.decide(
        visitor_id=None, profile=None, ctx=ctx(path="/product/9"), placements=["side"]
    )
    assert [p.placement for p in d.placements] == ["side"]


@pytest.mark.parametrize(
    ("path", "reason"),
    [("/nothing", "no_page"), ("/empty", "no_page"), (None, "no_uri"), ("nope", "bad_uri")],
)
def test_no_page_is_an_empty_decision(path: str | None, reason: str) -> None:
    engine = engine_from(RULES)
    d = engine.decide(visitor_id=None, profile=None, ctx=ctx(path=path), placements=[])
    assert (d.placements, d.key, d.unplaced) == ([], NO_PLACEMENTS_KEY, reason)


def test_path_is_a_context_field_with_pages() -> None:
    # The answer memos must key by the URI once pages choose the placements.
    assert "path" in engine_from(RULES).context_fields


def test_split_path() -> None:
    assert split_path("/a//b/?q") == ["a", "b"]
    assert split_path("a") is None


def _errors(text: str) -> list[tuple[int, int, str]]:
    return [(d.line, d.col, d.code) for d in diagnostics(text) if d.severity == "error"]


BAD = """
version: 1
sites:
  default:
    pages:
      - {path: /blog/*, placements: [hero]}
      - {path: /blog/post, placements: [hero]}
      - {path: "/p/{a}/{a}", placements: [hero]}
      - {path: "p/x", placements: [hero]}
      - {path: "/x/*/y", placements: [hero]}
      - {path: "/q/{a}", placements: [heor]}
      - {path: "/q/{b}", placements: [hero]}
      - {path: "/r/{a", placements: [hero]}
      - {placements: [hero]}
    placements:
      hero: {default: plain}
"""


def test_bad_pages_are_positioned_errors() -> None:
    assert _errors(BAD) == [
        (7, 16, "shadowed-page"),
        (8, 16, "bad-pattern"),
        (9, 16, "bad-pattern"),
        (10, 16, "bad-pattern"),
        (11, 38, "unknown-placement"),
        (12, 16, "duplicate-page"),
        (13, 16, "bad-pattern"),
        (14, 9, "missing-field"),
    ]
    unknown = next(d for d in diagnostics(BAD) if d.code == "unknown-placement")
    assert unknown.suggestion == "did you mean `hero`?"


def test_matching_cost_does_not_grow_with_pages() -> None:
    """The trie walks the path once: a site with 1 000 pages answers a look-up in about the time
    one with 5 does (a list scan would take ~1 000 times longer)."""
    import time

    def site(n: int) -> str:
        pages = "\n".join(f'      - {{path: "/c{i}/{{id}}", placements: [hero]}}' for i in range(n))
        head = "version: 1\nsites:\n  default:\n    pages:\n"
        return f"{head}{pages}\n    placements:\n      hero: {{default: plain}}\n"

    def cost(n: int) -> float:
        engine = engine_from(site(n))
        path = f"/c{n - 1}/x"
        assert engine.page_for("default", path) is not None
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(2000):
                engine.page_for("default", path)
            best = min(best, time.perf_counter() - t)
        return best

    assert cost(1000) < 20 * cost(5)


CARD = """
version: 1
sites:
  default:
    pages:
      - {path: /, placements: [hero]}
      - {path: /recs, placements: [hero, recs]}
      - {path: /blank, placements: []}
    placements:
      hero:
        default: {variant: d, content: {type: banner, tags: [x]}}
        rules:
          - {id: a, when: "ctx.device == 'mobile'", then: m}
      recs:
        default: d
        rules:
          - {id: mine, when: "ctx.device == 'tablet'",
             then: {variant: r, content: {type: product, rank: {affinity: 1}}}}
      lonely: {default: d}
"""


def test_per_page_cardinality_and_page_warnings() -> None:
    _, diags, report = rules.analyze_text(CARD, filename="t.yaml")
    assert report is not None
    by_page = {c.pattern: c for c in report.pages}
    # A plain banner pick is one answer for everyone: excluding seen items is asked for.
    assert (by_page["/"].max_keys, by_page["/"].per_visitor) == (2, [])
    assert by_page["/recs"].max_keys == 4
    assert by_page["/recs"].per_visitor == ["recs: the pick of rule `mine` (line 17)"]
    codes = {(d.code, d.line) for d in diags if d.severity == "warning"}
    assert ("page-without-placements", 8) in codes
    assert ("placement-on-no-page", 19) in codes


def test_exclude_is_asked_for() -> None:
    from rules.model import PickSpec

    assert PickSpec(type="banner").per_visitor() is False
    assert PickSpec(type="banner", exclude=("views",)).per_visitor() is True


def test_unknown_site_is_said() -> None:
    engine = engine_from(RULES)
    d = engine.decide(visitor_id=None, profile=None, ctx=ctx(site="nosuch"), placements=["hero"])
    assert d.unknown_site and d.placements[0].variant == "plain"  # default's rules
    for site in ("shop-fr", "default"):
        d = engine.decide(visitor_id=None, profile=None, ctx=ctx(site=site), placements=["hero"])
        assert not d.unknown_site


def test_shadow_index_agrees_with_pairwise_covers() -> None:
    """The trie that finds shadowed patterns (linear) answers what checking each pattern against
    every earlier one (quadratic) does, on random patterns over a small alphabet."""
    import random

    from rules.model import PageDef
    from rules.pages import ShadowIndex, covers

    rng = random.Random(16)

    def pattern() -> PageDef:
        parts = tuple(rng.choice(["a", "b", "{x}"]) for _ in range(rng.randrange(0, 4)))
        prefix = rng.random() < 0.3
        params = tuple(p for p in parts if p.startswith("{"))
        path = "/" + "/".join(parts) + ("/*" if prefix else "")
        return PageDef(path, parts, params, prefix, (), None, "default", None, 1, 1)  # type: ignore[arg-type]

    for _ in range(300):
        pages = [pattern() for _ in range(rng.randrange(1, 12))]
        index = ShadowIndex()
        for i, page in enumerate(pages):
            expected = next((e for e in pages[:i] if covers(e, page)), None)
            assert index.covering(page) is expected, [p.pattern for p in pages[: i + 1]]
            index.add(page)


@pytest.mark.parametrize("path", ["/\xff\xfe", "/a b", "/a\nb", "/a\x00"])
def test_what_is_not_a_uri_matches_nothing(path: str) -> None:
    assert split_path(path) is None
    d = engine_from(RULES).decide(visitor_id=None, profile=None, ctx=ctx(path=path), placements=[])
    assert (d.placements, d.key, d.unplaced) == ([], NO_PLACEMENTS_KEY, "bad_uri")


PARAMS = """
version: 1
sites:
  default:
    pages:
      - {path: "/product/{sku}", placements: [hero], type: product}
      - {path: "/{lang}/help", placements: [hero]}
      - {path: /, placements: [hero]}
    placements:
      hero:
        default: plain
        rules:
          - {id: tents, when: "ctx.page.sku == 'tent-1'", then: tent}
          - {id: french, when: "ctx.page.lang == 'fr'", then: fr}
"""


def test_template_values_are_ctx_page() -> None:
    engine = engine_from(PARAMS)

    def hero(path: str, placements: list[str] | None = None) -> str:
        c = ctx(path=path)
        d = engine.decide(visitor_id=None, profile=None, ctx=c, placements=placements or [])
        assert c.params is None  # the caller's context is not changed
        return d.placements[0].variant

    assert (hero("/product/tent-1"), hero("/product/boot-2")) == ("tent", "plain")
    assert (hero("/fr/help"), hero("/de/help")) == ("fr", "plain")
    assert hero("/") == "plain"  # a page without the segment: ctx.page.sku is null
    assert hero("/product/tent-1", ["hero"]) == "tent"  # explicit placements read it too
    # What varies the decision is keyed through the path, placements named or not.
    assert "path" in engine.context_fields
    a, b = ctx(path="/product/tent-1"), ctx(path="/product/boot-2")
    assert engine.named_context_key(a, ["hero"]) != engine.named_context_key(b, ["hero"])
    d = engine.decide(
        visitor_id=None, profile=None, ctx=ctx(path="/product/tent-1"), placements=[], explain=True
    )
    assert d.trace and d.placements[0].variant == "tent"


def test_unknown_page_value_is_a_positioned_error() -> None:
    text = PARAMS.replace("ctx.page.sku ==", "ctx.page.skuu ==")
    errs = [d for d in diagnostics(text) if d.severity == "error"]
    assert [(d.line, d.code) for d in errs] == [(13, "unknown-name")]
    assert errs[0].suggestion == "did you mean `sku`?"
    none = PARAMS.replace("/product/{sku}", "/product/*")
    assert [d.code for d in diagnostics(none) if d.severity == "error"] == ["unknown-name"]


def test_check_reports_rules_reading_page_values() -> None:
    _, _, report = rules.analyze_text(PARAMS, filename="t.yaml")
    assert report is not None
    page = next(c for c in report.pages if c.pattern == "/product/{sku}")
    assert page.page_values == [
        "hero: rule `tents` (line 13) reads ctx.page.sku",
        "hero: rule `french` (line 14) reads ctx.page.lang",
    ]
    from rules.analysis import describe_page

    assert "per value of its template segments" in describe_page(page)
