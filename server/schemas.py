"""Request and response bodies of the HTTP API. `/openapi.json` is generated from these types."""

from __future__ import annotations

from typing import Annotated

import msgspec

from rules import ActionDecision, PlacementDecision, TraceEntry


class VisitorIn(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Who is asking: a canonical id, and/or identifiers by type (`{"cookie": "k9"}`)."""

    id: str | None = None
    ids: dict[str, str] = msgspec.field(default_factory=dict)


class GeoIn(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    country: str | None = None
    region: str | None = None
    city: str | None = None


# Out-of-range clock fields were accepted and reached the rules as impossible values (`hour: 99`),
# or meant something else (`now: 1e300` became 1970-01-01 00:00 UTC). Bad input: 422 (SPEC §6).
Hour = Annotated[int, msgspec.Meta(ge=0, le=23)]
Weekday = Annotated[int, msgspec.Meta(ge=0, le=6, description="0 = Monday")]
# Epoch seconds from 1970 to the end of year 9999, the range a calendar can show.
Instant = Annotated[float, msgspec.Meta(ge=0, le=253402300799)]


class ContextIn(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    site: str | None = None
    locale: str | None = None
    url: str | None = None
    path: str | None = None
    referrer: str | None = None
    device: str | None = None
    timezone: str | None = None
    weather: str | None = None
    geo: GeoIn | None = None
    hour: Hour | None = None
    weekday: Weekday | None = None
    # null: fall back to the per-country default (SPEC §6)
    consent: bool | None = None
    # Epoch seconds to decide "as of" (e-mail send time); the server's clock when absent.
    now: Instant | None = None


class DecideRequest(msgspec.Struct, forbid_unknown_fields=True):
    placements: list[str]
    visitor: VisitorIn = msgspec.field(default_factory=VisitorIn)
    context: ContextIn = msgspec.field(default_factory=ContextIn)
    # Return the chosen content items' fields, not only their ids.
    render: bool = False


class ContentOut(msgspec.Struct):
    id: str
    type: str
    title: str
    locale: str | None
    tags: list[str]
    attributes: dict[str, str | int | float | bool | None]
    body: str


class DecideResponse(msgspec.Struct, omit_defaults=True):
    placements: list[PlacementDecision]
    segments: list[str]
    key: str
    snapshots: dict[str, str]
    ttl: int
    actions: list[ActionDecision] = msgspec.field(default_factory=list)
    fallback: str | None = None
    items: dict[str, ContentOut] | None = None
    trace: list[TraceEntry] | None = None


class ErrorDetail(msgspec.Struct):
    code: str
    message: str
    field: str | None = None


class ErrorBody(msgspec.Struct):
    error: ErrorDetail


class SnapshotStatus(msgspec.Struct):
    kind: str
    version: str | None
    age_s: float | None


class ReadyBody(msgspec.Struct):
    ready: bool
    snapshots: list[SnapshotStatus]
    signed: bool
    warnings: list[str]
    # The sites the active rules know (any other is decided with `default`'s rules and answered
    # `X-Edge-Fallback: unknown_site`); empty without rules.
    sites: list[str] = msgspec.field(default_factory=list)
