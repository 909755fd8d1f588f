"""Build-time classification: declarative rules that add tags or attributes to content items."""

from __future__ import annotations

import msgspec

from snapshots.config import Condition, EnrichRule
from snapshots.model import ContentItem

DAY = 86_400.0


def _number(v: object) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v)


def matches(cond: Condition, item: ContentItem, now: float) -> bool:
    if cond.type is not None and item.type != cond.type:
        return False
    if cond.has_tag is not None and cond.has_tag not in item.tags:
        return False
    if cond.attribute is not None:
        x = _number(item.attributes.get(cond.attribute))
        if x is None:
            return False
        if cond.lt is not None and not x < cond.lt:
            return False
        if cond.lte is not None and not x <= cond.lte:
            return False
        if cond.gt is not None and not x > cond.gt:
            return False
        if cond.gte is not None and not x >= cond.gte:
            return False
    if cond.published_within_days is not None:
        p = item.published_at
        if p is None or not (0 <= now - p < cond.published_within_days * DAY):
            return False
    return True


def enrich(item: ContentItem, rules: list[EnrichRule], now: float) -> ContentItem:
    """Apply every matching rule in order; tags come out sorted and unique."""
    tags = set(item.tags)
    attributes = dict(item.attributes)
    changed = False
    for rule in rules:
        if matches(rule.when, item, now):
            tags.update(rule.add_tags)
            attributes.update(rule.set_attributes)
            changed = True
    if not changed:
        return item
    return msgspec.structs.replace(item, tags=sorted(tags), attributes=attributes)
