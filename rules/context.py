"""The request context the server builds per request, and the clock fields derived from it."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec


class Geo(msgspec.Struct, kw_only=True):
    country: str | None = None
    region: str | None = None
    city: str | None = None


class Context(msgspec.Struct, kw_only=True):
    """What the request tells us. ``hour``/``weekday`` (0 = Monday) are derived from ``now`` in
    ``timezone`` (UTC when absent or unknown) unless the caller gives them."""

    site: str = "default"
    locale: str | None = None
    url: str | None = None
    path: str | None = None
    referrer: str | None = None
    device: str | None = None
    timezone: str | None = None
    weather: str | None = None
    geo: Geo = msgspec.field(default_factory=Geo)
    hour: int | None = None
    weekday: int | None = None
    consent: bool = True
    now: float = msgspec.field(default_factory=time.time)


_ZONES: dict[str, ZoneInfo | None] = {}
_CLOCK: dict[tuple[str | None, int], tuple[int, int]] = {}
_CLOCK_MAX = 4096


def _zone(name: str | None) -> ZoneInfo | None:
    if name is None:
        return None
    if name not in _ZONES:
        if len(_ZONES) > 1024:
            _ZONES.clear()  # bounded: time zone names come from requests
        try:
            _ZONES[name] = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            _ZONES[name] = None
    return _ZONES[name]


def clock(ctx: Context) -> tuple[int, int]:
    """(hour, weekday) for the context, cached per time zone and minute.

    Every UTC offset in use is a multiple of 15 minutes, so hour and weekday are constant within a
    minute: the cache key loses nothing.
    """
    if ctx.hour is not None and ctx.weekday is not None:
        return ctx.hour, ctx.weekday
    minute = int(ctx.now // 60)
    key = (ctx.timezone, minute)
    hit = _CLOCK.get(key)
    if hit is None:
        zone = _zone(ctx.timezone)
        try:
            dt = datetime.fromtimestamp(minute * 60, zone or UTC)
        except (OverflowError, OSError, ValueError):
            dt = datetime(1970, 1, 1, tzinfo=UTC)
        hit = (dt.hour, dt.weekday())
        if len(_CLOCK) >= _CLOCK_MAX:
            _CLOCK.clear()
        _CLOCK[key] = hit
    hour = ctx.hour if ctx.hour is not None else hit[0]
    weekday = ctx.weekday if ctx.weekday is not None else hit[1]
    return hour, weekday


def context_key(ctx: Context) -> tuple[object, ...]:
    """Every field of `ctx` a decision can read, except `now` (whose effect a decision's
    `expires` bounds): equal keys and an unexpired decision mean an equal decision."""
    geo = ctx.geo
    return (
        ctx.site,
        ctx.locale,
        ctx.url,
        ctx.path,
        ctx.referrer,
        ctx.device,
        ctx.timezone,
        ctx.weather,
        geo.country,
        geo.region,
        geo.city,
        ctx.hour,
        ctx.weekday,
        ctx.consent,
    )
