"""Merge policies, one by one, on the records of one person."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

from snapshots.config import ProfilesConfig
from snapshots.merge import Merger
from snapshots.model import ProfileRecord


def records(*dicts: dict[str, Any]) -> list[ProfileRecord]:
    return [msgspec.convert(d, ProfileRecord) for d in dicts]


OLD_CRM = {
    "source": "crm",
    "ids": {"customer_id": "C1"},
    "updated_at": "2026-11-01T00:00:00Z",
    "attributes": {"tier": "gold", "city": "Lyon", "ltv": 100.0},
    "interests": {"running": 0.9},
    "counters": {"orders": 3},
    "segments": ["vip"],
    "last_seen": {"category:shoes": "2026-11-01T00:00:00Z"},
}
NEW_WEB = {
    "source": "web",
    "ids": {"cookie": "k1"},
    "updated_at": "2026-11-10T00:00:00Z",
    "attributes": {"tier": "bronze", "city": "Paris", "ltv": 50.0},
    "interests": {"running": 0.2},
    "counters": {"orders": 2},
    "segments": ["newsletter"],
    "last_seen": {"category:shoes": "2026-11-09T00:00:00Z"},
}


def merge(cfg: ProfilesConfig) -> Any:
    return Merger(cfg).merge("p_1", {}, records(OLD_CRM, NEW_WEB))


def test_newest_wins(profiles_config: Callable[..., ProfilesConfig]) -> None:
    p = merge(profiles_config(merge={"default": "newest"}))
    assert p.attributes == {"tier": "bronze", "city": "Paris", "ltv": 50.0}
    assert p.counters == {"orders": 2}
    assert p.updated_at == datetime(2026, 11, 10, tzinfo=UTC).timestamp()


def test_source_priority_prefers_the_trusted_source_even_if_older(
    profiles_config: Callable[..., ProfilesConfig],
) -> None:
    p = merge(profiles_config(merge={"default": "source_priority"}, source_priority=["crm", "web"]))
    assert p.attributes["tier"] == "gold" and p.attributes["city"] == "Lyon"
    p = merge(profiles_config(merge={"default": "source_priority"}, source_priority=["web", "crm"]))
    assert p.attributes["tier"] == "bronze"


def test_sum_adds_counters(profiles_config: Callable[..., ProfilesConfig]) -> None:
    p = merge(profiles_config(merge={"default": "newest", "fields": {"counters": "sum"}}))
    assert p.counters == {"orders": 5}


def test_max_keeps_the_highest_score_and_latest_timestamp(
    profiles_config: Callable[..., ProfilesConfig],
) -> None:
    p = merge(
        profiles_config(
            merge={"default": "newest", "fields": {"interests": "max", "last_seen": "max"}}
        )
    )
    assert p.interests == {"running": 0.9}
    assert p.last_seen == {"category:shoes": datetime(2026, 11, 9, tzinfo=UTC).timestamp()}


def test_one_key_can_override_its_group(profiles_config: Callable[..., ProfilesConfig]) -> None:
    cfg = profiles_config(
        merge={
            "default": "newest",
            "fields": {"attributes.tier": "source_priority", "attributes.ltv": "max"},
        }
    )
    p = merge(cfg)
    assert p.attributes == {"tier": "gold", "city": "Paris", "ltv": 100.0}


def test_sum_on_text_falls_back_to_newest_and_segments_are_a_union(
    profiles_config: Callable[..., ProfilesConfig],
) -> None:
    p = merge(profiles_config(merge={"default": "sum"}))
    assert p.attributes["city"] == "Paris"
    assert p.attributes["ltv"] == 150.0
    assert p.segments == ["newsletter", "vip"]
    assert p.sources == ["crm", "web"]
