"""Content picks: prepared once per catalogue, validity at request time, affinity re-ranking."""

from __future__ import annotations

from rules_fakes import DAY, NOW, Activity, Catalog, Item, demo_catalog

from rules.model import PickSpec
from rules.picks import PickCache, candidates, pick


def run(
    spec: PickSpec, cat: Catalog, cache: PickCache, now: float = NOW, **kw: object
) -> list[str]:
    interests = kw.pop("interests", {})
    recent = kw.pop("recent", None)
    return pick(
        spec,
        cat,
        placement="p",
        locale=None,
        now=now,
        interests=interests,
        recent=recent,
        cache=cache,  # type: ignore[arg-type]
    )


def test_candidates_intersect_indexes_smallest_first() -> None:
    cat = demo_catalog()
    spec = PickSpec(tags=("running",), type="product")
    assert candidates(spec, cat, "p") == {"p-shoe", "p-gel", "p-old"}
    assert candidates(PickSpec(any_tags=("climbing", "fashion"), type="article"), cat, "p") == {
        "a-climb",
        "a-style",
    }
    assert candidates(PickSpec(tags=("nope",), type="product"), cat, "p") == frozenset()


def test_validity_is_checked_at_request_time_even_when_prepared() -> None:
    cat = Catalog(
        [
            Item("soon", "banner", ["t"], valid_from=NOW + DAY, priority=9),
            Item("now", "banner", ["t"], priority=1),
            Item("ending", "banner", ["t"], valid_to=NOW + DAY, priority=5),
        ]
    )
    cache = PickCache()
    spec = PickSpec(tags=("t",), limit=3)
    assert run(spec, cat, cache) == ["ending", "now"]
    assert run(spec, cat, cache, now=NOW + 2 * DAY) == ["soon", "now"]
    # Remembered per interval between validity edges: each instant still gets its own answer.
    assert run(spec, cat, cache, now=NOW + DAY) == ["soon", "now"]  # both change at NOW+DAY
    assert run(spec, cat, cache, now=NOW + DAY - 1) == ["ending", "now"]  # `soon` not yet
    assert run(spec, cat, cache) == ["ending", "now"]


def test_cache_follows_the_catalogue_object() -> None:
    cache = PickCache()
    spec = PickSpec(tags=("t",), limit=1)
    assert run(spec, Catalog([Item("a", "banner", ["t"])]), cache) == ["a"]
    assert run(spec, Catalog([Item("b", "banner", ["t"])]), cache) == ["b"]


def test_affinity_reranks_and_exclusions_apply() -> None:
    items = [Item(f"f{i}", "product", ["filler"], priority=5) for i in range(30)]
    items += [Item("run", "product", ["running"], priority=1), Item("camp", "product", ["camping"])]
    cat = Catalog(items)
    spec = PickSpec(
        type="product",
        rank=(("priority", 1.0), ("affinity", 10.0)),
        exclude=("views", "purchases"),
        limit=2,
    )
    cache = PickCache()
    assert run(spec, cat, cache, interests={"running": 0.9, "camping": 0.8}) == ["run", "camp"]
    # a weak interest does not beat a much higher priority
    assert run(spec, cat, cache, interests={"camping": 0.2}) == ["f0", "f1"]
    assert run(spec, cat, cache, interests={}) == ["f0", "f1"]
    got = run(spec, cat, cache, interests={"running": 0.9}, recent=Activity(views=["run"]))
    assert got == ["f0", "f1"]


def test_static_ids_keep_their_order() -> None:
    cat = demo_catalog()
    spec = PickSpec(ids=("p-tent", "missing", "p-old", "p-shoe"), limit=5)
    assert run(spec, cat, PickCache()) == ["p-tent", "p-shoe"]


def reference_rank(
    spec: PickSpec, cat: Catalog, interests: dict[str, float], limit: int
) -> list[str]:
    """Affinity re-ranking written plainly: every candidate scored, sorted, the first `limit`
    (the pool of `pick` is a subset, so this is checked only where the pool holds them all)."""
    from rules.picks import _weights

    w_priority, w_affinity, _ = _weights(spec)
    scored = sorted(
        (
            -(
                w_priority * cat.items[c].priority
                + w_affinity * sum(interests.get(t, 0.0) for t in cat.items[c].tags)
            ),
            c,
        )
        for c in candidates(spec, cat, "p")
    )
    return [c for _, c in scored[:limit]]


def test_affinity_ranking_matches_the_plain_formula() -> None:
    import random

    rnd = random.Random(7)
    tags = ["a", "b", "c", "d"]
    for trial in range(300):
        items = [
            Item(
                f"i{n}",
                "banner",
                rnd.sample(tags, rnd.randint(1, 3)),
                priority=rnd.choice([0.0, 1.0, 2.5, 3.0]),
            )
            for n in range(rnd.randint(1, 6))
        ]
        cat = Catalog(items)
        interests = {t: rnd.choice([0.0, 0.1, 0.3, 0.7, 1.0]) for t in rnd.sample(tags, 2)}
        limit = rnd.choice([1, 2, 3])
        spec = PickSpec(type="banner", rank=(("affinity", 10.0), ("priority", 1.0)), limit=limit)
        got = run(spec, cat, PickCache(), interests=interests)
        assert got == reference_rank(spec, cat, interests, limit), trial


def test_a_remembered_plain_pick_is_what_a_fresh_one_gives_at_every_instant() -> None:
    # `PickCache` answers a plain pick (no affinity, nothing excluded) from its last answer while
    # `now` stays between two validity edges in one recency bucket: checked against a pick made
    # with no cache at all, across edges, bucket ends and a catalogue replaced.
    import random

    from rules.picks import RECENCY_BUCKET_S, pick_until

    rnd = random.Random(11)
    for trial in range(200):
        items = [
            Item(
                f"i{n}",
                "banner",
                ["t"],
                valid_from=rnd.choice([None, NOW + 100, NOW + 450.5]),
                valid_to=rnd.choice([None, NOW + 299.5, NOW + 900]),
                published_at=rnd.choice([None, NOW - DAY, NOW - 9 * DAY]),
                priority=rnd.choice([0.0, 1.0, 2.0]),
            )
            for n in range(rnd.randint(1, 8))
        ]
        catalogues = [Catalog(items), Catalog(items[:1])]
        rank = rnd.choice([(("priority", 1.0),), (("recency", 1.0), ("priority", 1.0))])
        spec = PickSpec(tags=("t",), rank=rank, limit=rnd.choice([1, 2]))
        cache = PickCache()
        now = NOW - RECENCY_BUCKET_S
        for _ in range(30):
            now += rnd.choice([0.0, 0.5, 99.5, RECENCY_BUCKET_S])
            cat = rnd.choice(catalogues)
            fresh = pick_until(
                spec, cat, placement="p", locale=None, now=now, interests={}, recent=None
            )
            cached = pick_until(
                spec,
                cat,
                placement="p",
                locale=None,
                now=now,
                interests={},
                recent=None,
                cache=cache,
            )
            assert cached == fresh, (trial, now - NOW)
