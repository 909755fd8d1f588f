"""What a decision looks like, and its key.

The decision key is what a CDN caches a page under (with the URI). It is

    hex(blake2b(msgpack([site, [[placement, variant, [content ids…], arm], …]]), digest_size=8))

16 hex characters (64 bits), placements sorted by name — so the same decisions give the same key on
every worker and node whatever order the placements were asked in, and any difference in a variant,
a content id or an arm gives a different key. Segments, rule ids and actions are not in the key:
they do not change what the page shows (segments only through the variants, which are).
"""

from __future__ import annotations

import hashlib
import math

import msgspec

TraceValue = str | int | float | bool | None | list[str | int | float | bool | None]


class PlacementDecision(msgspec.Struct):
    placement: str
    variant: str
    content: list[str]
    rule: str | None = None
    experiment: str | None = None
    arm: str | None = None
    fallback: str | None = None  # why the default was forced: rule_error, deadline, …


class Webhook(msgspec.Struct, frozen=True):
    url: str
    method: str = "POST"


class ActionDecision(msgspec.Struct):
    """An eligible next-best action; the server fires its webhook, off the request path."""

    id: str
    priority: float
    webhook: Webhook | None = None


class Condition(msgspec.Struct):
    expr: str  # the sub-expression as written
    value: TraceValue  # what it evaluated to for this request


class TraceEntry(msgspec.Struct):
    """One step of explain mode: a rule tried (or an experiment / content pick applied)."""

    placement: str
    kind: str  # "segment" | "rule" | "default" | "experiment" | "content" | "fallback"
    id: str | None
    matched: bool
    conditions: list[Condition] = msgspec.field(default_factory=list)
    note: str | None = None


class Decision(msgspec.Struct):
    placements: list[PlacementDecision]
    segments: list[str]
    key: str
    actions: list[ActionDecision] = msgspec.field(default_factory=list)
    ttl: int = 0
    rule_errors: int = 0
    trace: list[TraceEntry] | None = None
    # Epoch seconds before which the same inputs (profile, context apart from `now`, live
    # activity, content and rules) give this same decision; inf when nothing used depends on time.
    expires: float = math.inf
    # Why a request that named no placements got none: "no_uri" (no path to match), "bad_uri"
    # (not a path, or too long), "no_page" (no page of the site matches it, or it has none).
    unplaced: str | None = None
    # The request named a site the rules do not know: decided with `default`'s rules (the page
    # still renders), and said so (`X-Edge-Fallback: unknown_site`, a metric, /v1/decide's JSON).
    unknown_site: bool = False


_encode = msgspec.msgpack.Encoder().encode


def _placement_name(p: PlacementDecision) -> str:
    return p.placement


def decision_key(site: str, placements: list[PlacementDecision]) -> str:
    """Short stable hash of everything that varies the page (see the module docstring)."""
    if len(placements) > 1:
        placements = sorted(placements, key=_placement_name)
    parts = [(p.placement, p.variant, p.content, p.arm) for p in placements]
    return hashlib.blake2b(_encode((site, parts)), digest_size=8).hexdigest()
