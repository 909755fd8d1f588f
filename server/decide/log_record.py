"""How a served decision is written to the decision log: one NDJSON line per sampled answer.

The record is a struct, not a dict: made with one call, untracked by the cyclic collector (it
holds strings, numbers and a list of strings: no cycle can pass through it), and encoded whole —
time included — by one msgspec call per line. Its fields are in the order the log's readers and
docs/live.md show them, `t` last; the context keeps only the fields that are set
(`omit_defaults`), so `rules impact` can replay it.
"""

from __future__ import annotations

import msgspec

import rules
from rules.context import clock

_encode = msgspec.json.Encoder().encode


class LoggedContext(msgspec.Struct, omit_defaults=True, gc=False):
    """What of a request's context a replay needs besides site, country, hour and `t`: the
    fields that are set, in this order."""

    consent: bool
    locale: str | None = None
    url: str | None = None
    path: str | None = None
    referrer: str | None = None
    device: str | None = None
    timezone: str | None = None
    weather: str | None = None
    weekday: int | None = None
    region: str | None = None
    city: str | None = None


class LoggedPlacement(msgspec.Struct, gc=False):
    placement: str
    variant: str
    rule: str | None
    experiment: str | None
    arm: str | None


class DecisionRecord(msgspec.Struct, gc=False):
    """A served decision's log record. `t` is set when a line is written: an answer served
    again from a memo is the same record at another time."""

    kind: str
    visitor: str | None  # None without consent: identifiers are never logged then
    site: str
    country: str | None
    hour: int
    snapshots: str
    key: str
    segments: list[str]
    placements: msgspec.Raw  # `placements_json`: shared by the requests a decision serves
    sample: float
    ctx: LoggedContext
    t: float = 0.0


def placements_json(decision: rules.Decision) -> msgspec.Raw:
    """A decision's placements as its records have them, encoded once per decision."""
    return msgspec.Raw(
        _encode(
            [
                LoggedPlacement(p.placement, p.variant, p.rule, p.experiment, p.arm)
                for p in decision.placements
            ]
        )
    )


def logged_context(ctx: rules.Context) -> LoggedContext:
    geo = ctx.geo
    return LoggedContext(
        ctx.consent,
        ctx.locale,
        ctx.url,
        ctx.path,
        ctx.referrer,
        ctx.device,
        ctx.timezone,
        ctx.weather,
        ctx.weekday,
        geo.region,
        geo.city,
    )


def decision_record(
    ctx: rules.Context,
    decision: rules.Decision,
    visitor: str | None,
    snapshots: str,
    sample: float,
    placements: msgspec.Raw,
) -> DecisionRecord:
    hour, _ = clock(ctx)
    return DecisionRecord(
        "decision",
        visitor,
        ctx.site,
        ctx.geo.country,
        hour,
        snapshots,
        decision.key,
        decision.segments,
        placements,
        sample,
        logged_context(ctx),
    )


def record_line(record: DecisionRecord, now: float) -> bytes:
    """The record's NDJSON line at `now` (seconds, to the millisecond)."""
    record.t = round(now, 3)
    return _encode(record) + b"\n"
