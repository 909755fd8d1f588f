"""Content picks: a query over the content indexes, ranked, minus what the visitor has seen.

Candidates come only from index look-ups (`ContentCatalog.ids`), intersected smallest first — never
a scan of the catalogue. Then, per candidate: the validity window at the request's time, the locale
(the request's locale, its language, or items without a locale), the exclusions; then the score

    priority_w · item.priority + affinity_w · Σ interests[tag] + recency_w · 1 / (1 + age_days / 7)

sorted high to low, ties broken by id (deterministic), first ``limit``.

`pick_until` also says until when the same inputs give the same ids (see rules/expiry.py): the next
validity boundary (``valid_from``/``valid_to``) of any candidate, the end of the 5-minute recency
bucket when recency ranks, and ``now + 1`` when live activity excludes items.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from itertools import repeat

from rules.interfaces import ActivityLike, ContentCatalog
from rules.model import PickSpec

_EMPTY: frozenset[str] = frozenset()


def candidates(spec: PickSpec, catalog: ContentCatalog, placement: str) -> frozenset[str]:
    sets: list[frozenset[str]] = [catalog.ids("tag", t) for t in spec.tags]
    if spec.type:
        sets.append(catalog.ids("type", spec.type))
    if spec.placement is not None:
        sets.append(catalog.ids("placement", spec.placement or placement))
    if spec.any_tags:
        union: frozenset[str] = _EMPTY
        for t in spec.any_tags:
            union = union | catalog.ids("tag", t)
        sets.append(union)
    if not sets:
        return _EMPTY
    sets.sort(key=len)
    out = sets[0]
    for s in sets[1:]:
        if not out:
            break
        out = out & s
    return out


def _locale_ok(item_locale: str | None, want: str | None) -> bool:
    if item_locale is None or want is None or item_locale == want:
        return True
    # "fr" content suits an "fr-FR" request.
    return want.split("-", 1)[0] == item_locale


RECENCY_BUCKET_S = 300.0
AFFINITY_DEPTH = 8  # extra items read per interest tag beyond `limit` (see `pick`)


def _weights(spec: PickSpec) -> tuple[float, float, float]:
    """(priority, affinity, recency) weights of a pick's `rank`: asked twice per pick, made once
    per distinct rank (a rule set has a handful)."""
    rank = spec.rank
    hit = _ranks.get(rank)
    if hit is None:
        if len(_ranks) >= 1024:
            _ranks.clear()
        hit = _ranks[rank] = _weights_of(rank)
    return hit


_ranks: dict[tuple[tuple[str, float], ...], tuple[float, float, float]] = {}
# An endless 0.0 for `map(interests.get, tags, _ZEROS)`: each tag's interest, 0.0 if none.
_ZEROS = repeat(0.0)


def _weights_of(rank: tuple[tuple[str, float], ...]) -> tuple[float, float, float]:
    w_priority = w_affinity = w_recency = 0.0
    for key, w in rank:
        if key == "priority":
            w_priority += w
        elif key == "affinity":
            w_affinity += w
        else:
            w_recency += w
    return w_priority, w_affinity, w_recency


Entry = tuple[float, str, tuple[str, ...], float | None, float | None]  # static, id, tags, from, to


class Prepared:
    """A pick's candidates in static-score order (priority and recency), overall and per tag.

    Built once per (pick, catalogue, placement, locale, 5-minute recency bucket) and reused:
    per request only a handful of entries are read. ``edges`` are the candidates' validity
    boundaries, sorted (a pick's answer can change at the first one after ``now``); ``until`` is
    when the static order itself expires (the end of the recency bucket it was built for, or
    never).
    """

    __slots__ = ("by_tag", "catalog", "edges", "ordered", "plain", "until")

    def __init__(
        self, catalog: ContentCatalog, ordered: list[Entry], until: float = math.inf
    ) -> None:
        self.catalog = catalog
        self.ordered = ordered
        self.until = until
        by_tag: dict[str, list[Entry]] = {}
        edges: set[float] = set()
        for e in ordered:
            for t in e[2]:
                by_tag.setdefault(t, []).append(e)
            for edge in (e[3], e[4]):
                if edge is not None and not math.isnan(edge):  # NaN never flips validity
                    edges.add(edge)
        self.by_tag = by_tag
        self.edges = sorted(edges)
        # The ids of a pick neither re-ranked by affinity nor excluding anything, by the interval
        # of `edges` `now` falls in: which entries are valid changes only at an edge, so within
        # one interval the first `limit` valid entries are the same (`pick_until`).
        self.plain: dict[int, tuple[str, ...]] = {}


class PickCache:
    """Bounded cache of prepared picks; entries are tied to the catalogue object they came from
    (pass the same ContentCatalog object for one content snapshot version)."""

    MAX = 512

    def __init__(self) -> None:
        self._entries: dict[tuple[object, ...], Prepared] = {}
        # A plain pick's answer (no affinity re-ranking, nothing excluded) by (pick, placement,
        # locale): (catalogue, from, until, ids) — the same ids and `until` for every `now` in
        # [from, until), the interval between two validity edges within one recency bucket.
        # Most picks are plain (a default's, a rule's tagged list): answered by one look-up,
        # without finding the prepared pick or its interval again.
        self._plain: dict[tuple[object, ...], tuple[ContentCatalog, float, float, tuple[str, ...]]]
        self._plain = {}

    def known(
        self,
        spec: PickSpec,
        catalog: ContentCatalog,
        placement: str,
        locale: str | None,
        now: float,
    ) -> tuple[list[str], float] | None:
        """A plain pick's (ids, until) at `now`, if answered before in the same interval."""
        hit = self._plain.get((id(spec), placement, locale))
        if hit is not None and hit[0] is catalog and hit[1] <= now < hit[2]:
            return list(hit[3]), hit[2]
        return None

    def remember(
        self,
        spec: PickSpec,
        catalog: ContentCatalog,
        placement: str,
        locale: str | None,
        start: float,
        until: float,
        ids: tuple[str, ...],
    ) -> None:
        if len(self._plain) >= self.MAX:
            self._plain.clear()
        self._plain[(id(spec), placement, locale)] = (catalog, start, until, ids)

    def prepared(
        self,
        spec: PickSpec,
        catalog: ContentCatalog,
        placement: str,
        locale: str | None,
        now: float,
    ) -> Prepared:
        w_priority, _, w_recency = _weights(spec)
        bucket = int(now // RECENCY_BUCKET_S) if w_recency else 0
        key = (id(spec), placement, locale, bucket)
        hit = self._entries.get(key)
        if hit is not None and hit.catalog is catalog:
            return hit
        at = bucket * RECENCY_BUCKET_S if w_recency else now
        want_locale = (
            None if spec.locale == "any" else (locale if spec.locale == "ctx" else spec.locale)
        )
        ordered: list[Entry] = []
        for cid in candidates(spec, catalog, placement):
            item = catalog.item(cid)
            if item is None:
                continue
            if spec.locale != "any" and not _locale_ok(item.locale, want_locale):
                continue
            score = w_priority * item.priority if w_priority else 0.0
            if w_recency and item.published_at is not None:
                age_days = max(0.0, (at - item.published_at) / 86400.0)
                score += w_recency / (1.0 + age_days / 7.0)
            ordered.append((score, cid, tuple(item.tags), item.valid_from, item.valid_to))
        ordered.sort(key=lambda e: (-e[0], e[1]))
        prepared = Prepared(
            catalog, ordered, (bucket + 1) * RECENCY_BUCKET_S if w_recency else math.inf
        )
        if len(self._entries) >= self.MAX:
            self._entries.clear()
        self._entries[key] = prepared
        return prepared


def _take(
    entries: list[Entry], n: int, now: float, excluded: set[str], out: dict[str, Entry]
) -> None:
    taken = 0
    for e in entries:
        if taken >= n:
            return
        cid = e[1]
        if cid in excluded or cid in out:
            if cid in out:
                taken += 1
            continue
        if (e[3] is not None and now < e[3]) or (e[4] is not None and now >= e[4]):
            continue
        out[cid] = e
        taken += 1


def pick(
    spec: PickSpec,
    catalog: ContentCatalog,
    *,
    placement: str,
    locale: str | None,
    now: float,
    interests: Mapping[str, float],
    recent: ActivityLike | None,
    cache: PickCache | None = None,
) -> list[str]:
    """The ids of the picked items, best first (`pick_until` without the expiry)."""
    return pick_until(
        spec,
        catalog,
        placement=placement,
        locale=locale,
        now=now,
        interests=interests,
        recent=recent,
        cache=cache,
    )[0]


def pick_until(
    spec: PickSpec,
    catalog: ContentCatalog,
    *,
    placement: str,
    locale: str | None,
    now: float,
    interests: Mapping[str, float],
    recent: ActivityLike | None,
    cache: PickCache | None = None,
) -> tuple[list[str], float]:
    """The ids of the picked items, best first, and the instant before which the same arguments
    but a later ``now`` give the same ids.

    Without affinity the answer is exact: the first ``limit`` valid, not excluded items in static
    order. With affinity, the pool re-ranked exactly is the best ``limit`` items in static order
    plus the best ``limit + 8`` of each tag the visitor has an interest in — exact unless an item
    with several of the visitor's interest tags ranks below that depth on each of them.
    """
    if spec.ids:
        out = []
        until = math.inf
        for cid in spec.ids:
            item = catalog.item(cid)
            if item is None:
                continue
            start, end = item.valid_from, item.valid_to
            if start is not None and start > now and start < until:
                until = start
            if end is not None and end > now and end < until:
                until = end
            if start is not None and now < start:
                continue
            if end is not None and now >= end:
                continue
            out.append(cid)
        return out[: spec.limit], until
    limit = spec.limit
    _, w_affinity, w_recency = _weights(spec)
    reranked = w_affinity and interests
    plain = not reranked and (recent is None or not spec.exclude)
    if plain and cache is not None:
        known = cache.known(spec, catalog, placement, locale, now)
        if known is not None:
            return known
    prepared = (cache or PickCache()).prepared(spec, catalog, placement, locale, now)
    until = prepared.until
    edges = prepared.edges
    i = 0
    if edges:
        i = bisect_right(edges, now)
        if i < len(edges) and edges[i] < until:
            until = edges[i]
    excluded: set[str] = set()
    if recent is not None and spec.exclude:
        until = min(until, now + 1.0)  # live activity decays with time
        for name in spec.exclude:
            seq: Sequence[str] = getattr(recent, name)
            excluded.update(seq)
    if not (reranked or excluded):
        ids = prepared.plain.get(i)
        if ids is None:
            first: dict[str, Entry] = {}
            _take(prepared.ordered, limit, now, excluded, first)
            ids = prepared.plain[i] = tuple(first)
        if plain and cache is not None:
            # From the edge before `now` (or the recency bucket's start) to `until`: the same.
            start = edges[i - 1] if i else -math.inf
            if w_recency:
                start = max(start, prepared.until - RECENCY_BUCKET_S)
            cache.remember(spec, catalog, placement, locale, start, until, ids)
        return list(ids), until
    pool: dict[str, Entry] = {}
    _take(prepared.ordered, limit, now, excluded, pool)
    if not reranked:
        return list(pool), until
    for tag, weight in interests.items():
        entries = prepared.by_tag.get(tag)
        if entries and weight:
            _take(entries, limit + AFFINITY_DEPTH, now, excluded, pool)
    # (The same sums, term by term in the same order, as a generator over the tags made.)
    get = interests.get
    scored = [(-(e[0] + w_affinity * sum(map(get, e[2], _ZEROS))), cid) for cid, e in pool.items()]
    if limit == 1:  # the best one: ids are distinct, so the smallest pair is sorted()'s first
        return [min(scored)[1]] if scored else [], until
    scored.sort()
    return [cid for _, cid in scored[:limit]], until
