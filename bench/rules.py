"""Rule evaluation benchmarks (SPEC §9), run with `python -m bench.rules`.

Measures, in one run:

- ``placement50``: one placement of 50 rules, profile in hand — the matching rule is the last one,
  so all 50 conditions are evaluated (the worst case of first_match);
- ``decision3``: a whole decision for 3 placements (50 rules, a content pick with affinity, a
  score_sorted placement) *including the profile lookup*: each decision looks a demo visitor up by
  cookie in a real LMDB profiles snapshot (alias index, then the profile, decoded from LMDB's
  buffer);
- ``pages_scale``: the seed's scale with pages (`measure_pages`): check_s, compile_s, activate_s
  and one page-only request (the page look-up, and the decision);
- ``compile_20k_rules_s``: load + check + compile a file of 20 000 rules (1 000 site-wide placements
  × 10 rules, plus 20 sites each overriding 50 placements × 10 rules);
- ``peers``: the same 50 conditions in the Python rule engines on PyPI (rule-engine, cel-python,
  json-logic-qubit, zen-engine), µs per evaluation of the 50-rule first-match, side by side.

Human lines first; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

import rules
import snapshots
from rules import Context, Geo
from server.offline.demo import ensure_demo
from snapshots import store

from .http import demo_cookies

# (field, op, literal): each rule is a conjunction of two of these; the data never matches rules
# 0..48, and matches rule 49 — every engine evaluates all 50.
FIELDS: dict[str, str] = {
    "tier": "profile.tier",
    "ltv": "profile.ltv",
    "country": "profile.country",
    "running": "profile.interests.running",
    "orders": "profile.counters.orders",
    "hour": "ctx.hour",
}
DATA: dict[str, Any] = {
    "tier": "gold",
    "ltv": 812.5,
    "country": "FR",
    "running": 0.9,
    "orders": 7.0,
    "hour": 14,
}


def conditions() -> list[list[tuple[str, str, Any]]]:
    tiers = ["bronze", "silver", "platinum"]
    countries = ["DE", "GB", "ES", "IT", "NL"]
    out: list[list[tuple[str, str, Any]]] = []
    for i in range(49):
        kind = i % 4
        if kind == 0:
            out.append([("tier", "==", tiers[i % 3]), ("ltv", ">", 100.0 + i)])
        elif kind == 1:
            out.append([("country", "==", countries[i % 5]), ("running", ">", 0.5)])
        elif kind == 2:
            out.append([("orders", ">", 50.0 + i), ("hour", "<", 12)])
        else:
            out.append([("ltv", ">", 5000.0 + i), ("tier", "==", "gold")])
    out.append([("tier", "==", "gold"), ("ltv", ">", 500.0)])
    return out


def _lit(v: Any) -> str:
    return json.dumps(v)


def rules_yaml(conds: list[list[tuple[str, str, Any]]]) -> str:
    lines = [
        "schema:",
        "  attributes: {tier: string, ltv: number, country: string}",
        "segments:",
        "  runner: profile.interests.running > 0.5",
        "sites:",
        "  default:",
        "    placements:",
        "      p50:",
        "        default: none",
        "        rules:",
    ]
    for i, conj in enumerate(conds):
        expr = " and ".join(f"{FIELDS[f]} {op} {_lit(v)}" for f, op, v in conj)
        lines.append(f"          - {{id: r{i}, when: '{expr}', then: v{i}}}")
    lines += [
        "      recs:",
        "        default: {variant: popular, content: {type: product, limit: 4}}",
        "        rules:",
        "          - id: for_you",
        "            when: segment.runner",
        "            then: {variant: for_you, content: {type: product, limit: 4,"
        " rank: {affinity: 10, priority: 1}}}",
        "      side:",
        "        strategy: score_sorted",
        "        default: latest",
        "        rules:",
        "          - {id: a, when: segment.runner, score: profile.interests.running * 10, then: a}",
        "          - {id: b, when: 'profile.tier == \"gold\"', score: 5, then: b}",
        "          - {id: c, when: profile.ltv > 100, score: profile.ltv / 100, then: c}",
    ]
    return "\n".join(lines) + "\n"


class BenchProfile(msgspec.Struct, frozen=True):
    """Same shape as snapshots.Profile (CONTRACTS.md)."""

    id: str
    ids: dict[str, list[str]]
    attributes: dict[str, str | int | float | bool | None]
    interests: dict[str, float]
    segments: list[str]
    counters: dict[str, float]
    last_seen: dict[str, float]
    updated_at: float
    sources: list[str]


class BenchItem(msgspec.Struct, frozen=True):
    id: str
    type: str
    tags: list[str]
    locale: str | None = None
    placements: list[str] = []
    valid_from: float | None = None
    valid_to: float | None = None
    published_at: float | None = None
    priority: float = 0.0


class BenchCatalog:
    def __init__(self, n: int = 2000) -> None:
        tags = ["running", "hiking", "camping", "cycling", "climbing", "fashion", "nutrition"]
        self.items = {
            f"p{i}": BenchItem(
                f"p{i}", "product", [tags[i % 7], tags[(i * 3) % 7]], priority=i % 10
            )
            for i in range(n)
        }
        index: dict[tuple[str, str], set[str]] = {}
        for item in self.items.values():
            index.setdefault(("type", item.type), set()).add(item.id)
            for t in item.tags:
                index.setdefault(("tag", t), set()).add(item.id)
        self.index = {k: frozenset(v) for k, v in index.items()}

    def ids(self, field: str, value: str) -> frozenset[str]:
        return self.index.get((field, value), frozenset())

    def item(self, id: str) -> BenchItem | None:
        return self.items.get(id)


def profile_bytes() -> bytes:
    p = BenchProfile(
        id="c-alice",
        ids={"cookie": ["c-alice"], "customer_id": ["C1"]},
        attributes={"tier": "gold", "ltv": 812.5, "country": "FR", "birth_year": 1990},
        interests={"running": 0.9, "outdoor": 0.4},
        segments=["newsletter"],
        counters={"orders": 7.0},
        last_seen={"category:shoes": 1_779_000_000.0},
        updated_at=1_779_000_000.0,
        sources=["crm", "web"],
    )
    return msgspec.msgpack.encode(p)


def _percentiles(samples: list[float]) -> tuple[float, float]:
    samples.sort()
    p50 = statistics.median(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return p50, p99


def _noop() -> object:
    return None


def _sample(fn: Callable[[], object], iterations: int, batch: int) -> list[float]:
    samples: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(max(1, iterations // batch)):
        t0 = clock()
        for _ in range(batch):
            fn()
        samples.append((clock() - t0) / batch / 1000.0)
    return samples


def timed(fn: Callable[[], object], iterations: int, batch: int = 1) -> tuple[float, float]:
    """p50/p99 in µs per call. Each call is timed on its own (batch=1), so a rare preemption by
    another process lands in one sample instead of inflating a batch; the cost of the timer and
    the call itself, measured on a no-op, is subtracted."""
    for _ in range(min(200, iterations)):
        fn()
    overhead = statistics.median(_sample(_noop, 2000, batch))
    samples = [max(0.0, s - overhead) for s in _sample(fn, iterations, batch)]
    return _percentiles(samples)


def big_rules_yaml() -> str:
    out = ["sites:", "  default:", "    placements:"]

    def placement(name: str, indent: str) -> None:
        out.append(f"{indent}{name}:")
        out.append(f"{indent}  default: d")
        out.append(f"{indent}  rules:")
        for r in range(10):
            out.append(
                f"{indent}    - {{id: r{r}, when: 'ctx.hour > {r} and ctx.geo.country == \"C{r}\"',"
                f" then: v{r}}}"
            )

    for i in range(1000):
        placement(f"pl{i}", "      ")
    for s in range(20):
        out += [f"  site{s}:", "    placements:"]
        for i in range(50):
            placement(f"pl{(s * 50 + i) % 1000}", "      ")
    return "\n".join(out) + "\n"


def paged_rules_yaml(pages_per_site: int = 200) -> str:
    """`big_rules_yaml` plus 5 personas × 6 geos × 8 divisions as segments and, per site,
    `pages_per_site` pages (templates, prefixes and exact paths) naming 3 placements each."""
    segs = [
        "segments:",
        *(f"  persona{p}: profile.interests.i{p} >= 0.5" for p in range(5)),
        *(f'  geo{g}: ctx.geo.country == "G{g}"' for g in range(6)),
        *(f'  div{d}: profile.division == "D{d}"' for d in range(8)),
    ]
    schema = [
        "schema:",
        "  attributes:",
        "    division: string",
        "  interests: [" + ", ".join(f"i{p}" for p in range(5)) + "]",
    ]
    lines = big_rules_yaml().splitlines()
    out: list[str] = ["version: 1", *schema, *segs]
    for line in lines:
        out.append(line)
        if line == "  default:" or (line.startswith("  site") and line.endswith(":")):
            out.append("    pages:")
            for i in range(pages_per_site):
                pls = ", ".join(f"pl{(i * 3 + k) % 1000}" for k in range(3))
                shape = ("/c{i}/{{sku}}", "/exact/{i}", "/docs{i}/*")[i % 3].format(i=i)
                out.append(f'      - {{path: "{shape}", placements: [{pls}]}}')
    # The segments are used (else they are warned about as unused): one rule reads them all.
    out += [
        "  site-segments:",
        "    placements:",
        "      pl0:",
        "        default: d",
        "        rules:",
        "          - {id: all, when: '"
        + " or ".join(
            [f"segment.persona{p}" for p in range(5)]
            + [f"segment.geo{g}" for g in range(6)]
            + [f"segment.div{d}" for d in range(8)]
        )
        + "', then: s}",
    ]
    return "\n".join(out) + "\n"


def measure_pages(iterations: int = 20_000) -> dict[str, float]:
    """The seed's scale: check, compile and activate (the first request of every site, which
    builds its page matcher) a file of 20 sites × 1 000 placements with pages, and the cost of
    one page-only request there: the first (which compiles the page's placements: compiling is
    lazy, per placement), then the page look-up alone and the decision it leads to."""
    text = paged_rules_yaml()
    # Wall and CPU seconds of each stage: on a shared machine the wall time is mostly waiting for
    # a core, and the CPU time is what the stage costs.
    c0, t0 = time.process_time(), time.perf_counter()
    ruleset, diags = rules.load(text, filename="paged.yaml")
    if ruleset is None:
        raise RuntimeError(rules.render_all(diags))
    c1, t1 = time.process_time(), time.perf_counter()
    engine = rules.compile_ruleset(ruleset)
    c2, t2 = time.process_time(), time.perf_counter()
    for s in [*ruleset.sites]:
        engine.page_for(s, "/")
    c3, t3 = time.process_time(), time.perf_counter()
    ctx = Context(site="site7", path="/c99/sku-123?x=1", now=1_780_000_000.0)
    # The first request of a page compiles its placements (`rules.engine.Programs`).
    t4 = time.perf_counter()
    engine.decide(visitor_id=None, profile=None, ctx=ctx, placements=())
    first_ms = (time.perf_counter() - t4) * 1000

    def page() -> object:
        return engine.page_for("site7", "/c99/sku-123?x=1")

    def decide() -> object:
        return engine.decide(visitor_id=None, profile=None, ctx=ctx, placements=())

    if (
        page() is None
        or not engine.decide(visitor_id=None, profile=None, ctx=ctx, placements=()).placements
    ):
        raise RuntimeError("the bench page matches nothing")
    page_us, _ = timed(page, iterations, batch=10)
    decide_us, _ = timed(decide, iterations // 4, batch=5)
    return {
        "check_s": round(t1 - t0, 3),
        "compile_s": round(t2 - t1, 3),
        "activate_s": round(t3 - t2, 3),
        "check_cpu_s": round(c1 - c0, 3),
        "compile_cpu_s": round(c2 - c1, 3),
        "activate_cpu_s": round(c3 - c2, 3),
        "first_page_decision_ms": round(first_ms, 3),
        "placements_compiled_after_first_page": float(engine.programs_compiled),
        "page_match_p50_us": round(page_us, 3),
        "page_decision_p50_us": round(decide_us, 3),
        "pages": float(sum(len(site.pages) for site in ruleset.sites.values())),
    }


def pages_scale(iterations: int) -> dict[str, float]:
    """`measure_pages`, with its human line."""
    scale = measure_pages(iterations)
    print(
        f"seed scale with pages: check {scale['check_s']:.2f} s, compile "
        f"{scale['compile_s']:.2f} s, activate {scale['activate_s']:.3f} s (CPU: "
        f"{scale['check_cpu_s']:.2f}, {scale['compile_cpu_s']:.2f}, "
        f"{scale['activate_cpu_s']:.3f} s); one page: "
        f"first {scale['first_page_decision_ms']:.1f} ms, "
        f"match {scale['page_match_p50_us']:.2f} µs, "
        f"decision {scale['page_decision_p50_us']:.2f} µs"
    )
    return scale


def measure_compile() -> tuple[float, int]:
    text = big_rules_yaml()
    t0 = time.perf_counter()
    ruleset, diags = rules.load(text, filename="big.yaml")
    if ruleset is None:
        raise RuntimeError(rules.render_all(diags))
    engine = rules.compile_ruleset(ruleset)
    elapsed = time.perf_counter() - t0
    n_rules = 1000 * 10 + 20 * 50 * 10
    return elapsed, n_rules if engine else 0


# -- peers ----------------------------------------------------------------------------------


def _peer_rule_engine(conds: list[list[tuple[str, str, Any]]]) -> Callable[[], object] | None:
    try:
        import rule_engine
    except ImportError:
        return None
    compiled = [
        rule_engine.Rule(" and ".join(f"{f} {op} {_lit(v)}" for f, op, v in c)) for c in conds
    ]
    data = dict(DATA)

    def run() -> object:
        for i, r in enumerate(compiled):
            if r.matches(data):
                return i
        return -1

    return run


def _peer_cel(conds: list[list[tuple[str, str, Any]]]) -> Callable[[], object] | None:
    try:
        import celpy
    except ImportError:
        return None
    env = celpy.Environment()
    programs = []
    for c in conds:
        expr = " && ".join(f"{f} {op} {_lit(v)}" for f, op, v in c)
        programs.append(env.program(env.compile(expr)))
    to_cel = celpy.json_to_cel  # type: ignore[attr-defined, unused-ignore]
    activation = {k: to_cel(v) for k, v in DATA.items()}

    def run() -> object:
        for i, prog in enumerate(programs):
            if prog.evaluate(activation):
                return i
        return -1

    return run


def _peer_json_logic(conds: list[list[tuple[str, str, Any]]]) -> Callable[[], object] | None:
    try:
        from json_logic import jsonLogic
    except ImportError:
        return None
    logic = [{"and": [{op: [{"var": f}, v]} for f, op, v in c]} for c in conds]
    data = dict(DATA)

    def run() -> object:
        for i, rule in enumerate(logic):
            if jsonLogic(rule, data):
                return i
        return -1

    return run


def _peer_zen(conds: list[list[tuple[str, str, Any]]]) -> Callable[[], object] | None:
    try:
        import zen
    except ImportError:
        return None
    exprs = [
        zen.compile_expression(" and ".join(f"{f} {op} {_lit(v)}" for f, op, v in c)) for c in conds
    ]
    data = dict(DATA)

    def run() -> object:
        for i, e in enumerate(exprs):
            if e.evaluate(data):
                return i
        return -1

    return run


PEERS: dict[str, Callable[[list[list[tuple[str, str, Any]]]], Callable[[], object] | None]] = {
    "rule-engine": _peer_rule_engine,
    "cel-python": _peer_cel,
    "json-logic-qubit": _peer_json_logic,
    "zen-engine": _peer_zen,
}


def run(iterations: int = 20_000, peers: bool = True, compile_big: bool = True) -> dict[str, Any]:
    """The whole benchmark; returns the result object (also used by the smoke test)."""
    conds = conditions()
    ruleset, diags = rules.load(rules_yaml(conds), filename="bench.yaml")
    if ruleset is None:
        raise RuntimeError(rules.render_all(diags))
    engine = rules.compile_ruleset(ruleset)
    raw = profile_bytes()
    decoder = msgspec.msgpack.Decoder(BenchProfile)
    profile = decoder.decode(raw)
    catalog = BenchCatalog()
    ctx = Context(site="shop-fr", locale="fr-FR", geo=Geo(country="FR"), hour=14, weekday=2)
    one = ["p50"]
    three = ["p50", "recs", "side"]

    check = engine.decide(visitor_id="c-alice", profile=profile, ctx=ctx, placements=one)
    if check.placements[0].rule != "r49" or check.rule_errors:
        raise RuntimeError(f"bench rule set does not behave as designed: {check}")

    def placement50() -> object:
        return engine.decide(visitor_id="c-alice", profile=profile, ctx=ctx, placements=one)

    with tempfile.TemporaryDirectory() as tmp:
        # A real profiles snapshot (the demo shop's), looked up by cookie through the alias index
        # and decoded from LMDB's buffer, visitor after visitor.
        ensure_demo(Path(tmp))
        profiles = snapshots.open_profiles(store.active_path(tmp, "profiles") or tmp)
        visitors = itertools.cycle([{"cookie": c} for c in demo_cookies()])

        def decision3() -> object:
            p = profiles.lookup(next(visitors))
            return engine.decide(
                visitor_id="c-alice", profile=p, ctx=ctx, placements=three, content=catalog
            )

        p50_1, p99_1 = timed(placement50, iterations)
        p50_3, p99_3 = timed(decision3, iterations)
        profiles.close()
    # The bare rule function, for the like-for-like comparison with the peers (which only
    # evaluate conditions; no decision object, key or segments).
    prog = engine._placements_for("shop-fr", "fr-FR")["p50"]
    args: tuple[object, ...] = (
        profile.attributes,
        profile.interests,
        profile.counters,
        profile.last_seen,
        profile.segments,
        profile.id,
        ctx,
        14,
        2,
        ctx.now,
        (),
        (),
        (),
        (),
        {},
    )
    fn = prog.fn

    def bare() -> object:
        return fn(*args)

    bare_p50, _ = timed(bare, iterations)
    result: dict[str, Any] = {
        "placement50_p50_us": round(p50_1, 3),
        "placement50_p99_us": round(p99_1, 3),
        "decision3_p50_us": round(p50_3, 3),
        "decision3_p99_us": round(p99_3, 3),
        "placement50_rules_only_p50_us": round(bare_p50, 3),
        "profile_source": "LMDB alias lookup + decode per decision (demo profiles snapshot)",
    }
    print(
        f"placement of 50 rules (decide, profile in hand): p50 {p50_1:.2f} µs  p99 {p99_1:.2f} µs"
    )
    print(f"  of which the compiled rules alone: p50 {bare_p50:.2f} µs")
    print(f"decision for 3 placements + profile lookup:    p50 {p50_3:.2f} µs  p99 {p99_3:.2f} µs")
    if compile_big:
        secs, n = measure_compile()
        result["compile_20k_rules_s"] = round(secs, 3)
        print(f"load + check + compile {n} rules: {secs:.2f} s")
        result["pages_scale"] = pages_scale(iterations)
    peer_results: dict[str, float | None] = {}
    if peers:
        peer_iters = max(200, iterations // 20)
        for name, factory in PEERS.items():
            try:
                fn_peer = factory(conds)
            except Exception as exc:  # a peer that fails to set up is reported, not fatal
                print(f"peer {name}: failed to set up ({type(exc).__name__}: {exc})")
                peer_results[name] = None
                continue
            if fn_peer is None:
                print(f"peer {name}: not installed (pip install -e '.[bench]'); skipped")
                peer_results[name] = None
                continue
            if fn_peer() != 49:
                print(f"peer {name}: disagrees on the rule set (got {fn_peer()}); skipped")
                peer_results[name] = None
                continue
            us, _ = timed(fn_peer, peer_iters, batch=5)
            peer_results[name] = round(us, 2)
            print(f"peer {name}: {us:.1f} µs per 50-rule evaluation")
        result["peers"] = peer_results
        measured = [v for v in peer_results.values() if v]
        if measured:
            fastest = min(measured)
            result["speedup_vs_fastest_peer"] = round(fastest / p50_1, 1)
            result["speedup_rules_only_vs_fastest_peer"] = round(fastest / bare_p50, 1)
            print(
                f"speed-up vs the fastest peer: {fastest / p50_1:.1f}× (whole decide), "
                f"{fastest / bare_p50:.1f}× (rules only)"
            )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--iterations", type=int, default=20_000)
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument(
        "--pages-only", action="store_true", help="only the seed scale with pages (pages_scale)"
    )
    args = parser.parse_args()
    if args.pages_only:
        result: dict[str, Any] = {"pages_scale": pages_scale(args.iterations)}
    else:
        result = run(args.iterations, peers=not args.no_peers)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
