"""The records snapshots hand to the world (docs/CONTRACTS.md). Times are epoch seconds (UTC)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

TzDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
Scalar = str | int | float | bool | None


class Profile(msgspec.Struct, frozen=True):
    id: str
    ids: dict[str, list[str]]
    attributes: dict[str, Scalar]
    interests: dict[str, float]
    segments: list[str]
    counters: dict[str, float]
    last_seen: dict[str, float]
    updated_at: float
    sources: list[str]


class ContentItem(msgspec.Struct, frozen=True):
    id: str
    source: str
    type: str
    title: str
    locale: str | None
    tags: list[str]
    categories: list[str]
    placements: list[str]
    attributes: dict[str, Scalar]
    valid_from: float | None
    valid_to: float | None
    published_at: float | None
    priority: float
    body: str
    template: str | None
    fields: dict[str, str]


class ProfileRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One line of a profile export: one source system's view of one person (SPEC §4)."""

    source: str
    ids: dict[str, str | list[str]]
    updated_at: TzDatetime
    attributes: dict[str, Scalar] = {}
    interests: dict[str, float] = {}
    segments: list[str] = []
    counters: dict[str, float] = {}
    last_seen: dict[str, TzDatetime] = {}
