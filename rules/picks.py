"""Content picks: a query over the content indexes, ranked, minus what the visitor has seen.

Candidates come only from index look-ups (`ContentCatalog.ids`), intersected smallest first — never
a scan of the catalogue. Then, per candidate: the validity window at the request's time, the locale
(the request's locale, its language, or items without a locale), the exclusions; then the score

    priority_w · item.priority + affinity_w · Σ interests[tag] + recency_w · 1 / (1 + age_days / 7)

sorted high to low, ties broken by id (deterministic), first ``limit``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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


def pick(
    spec: PickSpec,
    catalog: ContentCatalog,
    *,
    placement: str,
    locale: str | None,
    now: float,
    interests: Mapping[str, float],
    recent: ActivityLike | None,
) -> list[str]:
    """The ids of the picked items, best first."""
    if spec.ids:
        out = []
        for cid in spec.ids:
            item = catalog.item(cid)
            if item is None:
                continue
            if item.valid_from is not None and now < item.valid_from:
                continue
            if item.valid_to is not None and now >= item.valid_to:
                continue
            out.append(cid)
        return out[: spec.limit]
    ids = candidates(spec, catalog, placement)
    if not ids:
        return []
    excluded: set[str] = set()
    if recent is not None:
        for name in spec.exclude:
            seq: Sequence[str] = getattr(recent, name)
            excluded.update(seq)
    want_locale = (
        None if spec.locale == "any" else (locale if spec.locale == "ctx" else spec.locale)
    )
    check_locale = spec.locale != "any"
    w_priority = w_affinity = w_recency = 0.0
    for key, w in spec.rank:
        if key == "priority":
            w_priority += w
        elif key == "affinity":
            w_affinity += w
        else:
            w_recency += w
    scored: list[tuple[float, str]] = []
    for cid in ids:
        if cid in excluded:
            continue
        item = catalog.item(cid)
        if item is None:
            continue
        if item.valid_from is not None and now < item.valid_from:
            continue
        if item.valid_to is not None and now >= item.valid_to:
            continue
        if check_locale and not _locale_ok(item.locale, want_locale):
            continue
        score = w_priority * item.priority if w_priority else 0.0
        if w_affinity and interests:
            score += w_affinity * sum(interests.get(t, 0.0) for t in item.tags)
        if w_recency and item.published_at is not None:
            age_days = max(0.0, (now - item.published_at) / 86400.0)
            score += w_recency / (1.0 + age_days / 7.0)
        scored.append((-score, cid))
    scored.sort()
    return [cid for _, cid in scored[: spec.limit]]
