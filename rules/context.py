"""The request context the server builds per request, and the clock fields derived from it."""

from __future__ import annotations

import math
import operator
import time
import typing
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from rules import types as T


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
    # The matched page's template values (`/product/{sku}` → {"sku": "42"}): `ctx.page.sku` in
    # rules. Filled by the engine from `path` (never by a caller), so not a field of its own in
    # `FIELDS`/`KEY_FIELDS`: what it holds is keyed through `path`.
    params: dict[str, str] | None = None


_ZONES: dict[str, ZoneInfo | None] = {}
# (time zone, minute) → (hour, weekday, the first instant after the minute they can change at)
_CLOCK: dict[tuple[str | None, int], tuple[int, int, float]] = {}
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


def _derived(timezone: str | None, minute: int) -> tuple[int, int, float]:
    """The cache entry of (timezone, minute), computed on a miss."""
    key = (timezone, minute)
    hit = _CLOCK.get(key)
    if hit is None:
        zone = _zone(timezone) or UTC
        start = minute * 60
        quarter = (start // 900 + 1) * 900  # the next quarter hour in UTC
        until = float(start + 60)
        try:
            dt = datetime.fromtimestamp(start, zone)
        except (OverflowError, OSError, ValueError):
            dt = datetime(1970, 1, 1, tzinfo=UTC)
        else:
            # Offsets in use are whole quarter hours, so the local hour and day change on UTC
            # quarter hours — unless the offset is not one (some before 1980) or changes before
            # the quarter (a transition off the quarter hour, e.g. St John's at 00:01 until 2011):
            # then at any minute.
            offset = dt.utcoffset()
            try:
                later = datetime.fromtimestamp(quarter - 60, zone).utcoffset()
            except (OverflowError, OSError, ValueError):
                later = None
            if offset is not None and offset == later and offset.total_seconds() % 900 == 0:
                until = float(quarter)
        hit = (dt.hour, dt.weekday(), until)
        if len(_CLOCK) >= _CLOCK_MAX:
            _CLOCK.clear()
        _CLOCK[key] = hit
    return hit


def clock(ctx: Context) -> tuple[int, int]:
    """(hour, weekday) for the context, cached per time zone and minute.

    Every UTC offset in use is a multiple of 15 minutes, so hour and weekday are constant within a
    minute: the cache key loses nothing.
    """
    hour, weekday, _ = clock_until(ctx)
    return hour, weekday


def clock_until(ctx: Context) -> tuple[int, int, float]:
    """(hour, weekday, turn): `clock` and the first instant after ``ctx.now`` at which the hour or
    weekday derived from ``now`` can change — the next quarter hour in UTC, or the next minute
    where the zone's offset is not a steady whole quarter hour; inf when the caller gave both.
    (When the caller gave one, ``turn`` is that of the other.)"""
    hour, weekday = ctx.hour, ctx.weekday
    if hour is not None and weekday is not None:
        return hour, weekday, math.inf
    minute = int(ctx.now // 60)
    hit = _CLOCK.get((ctx.timezone, minute)) or _derived(ctx.timezone, minute)
    return (
        hit[0] if hour is None else hour,
        hit[1] if weekday is None else weekday,
        hit[2],
    )


class Field(NamedTuple):
    """One context field as rules see it: ``ctx.<name>`` (geo's as ``geo.<name>``)."""

    name: str
    type: T.Type
    nullable: bool  # None at run time when the request does not say (fields without a default)


# How the language sees a field's Python type. `now` is epoch seconds: a timestamp.
_LANGUAGE_TYPES: dict[object, T.Type] = {str: T.STRING, int: T.INT, bool: T.BOOL, float: T.NUMBER}


def _fields(struct: type[msgspec.Struct], prefix: str) -> list[Field]:
    out: list[Field] = []
    for info in msgspec.structs.fields(struct):
        if info.name == "params":
            continue  # `ctx.page.<name>`: derived from `path` (see `Context.params`)
        if isinstance(info.type, type) and issubclass(info.type, msgspec.Struct):
            out.extend(_fields(info.type, f"{prefix}{info.name}."))
            continue
        args = [a for a in typing.get_args(info.type) if a is not type(None)] or [info.type]
        typ = T.TIMESTAMP if info.name == "now" else _LANGUAGE_TYPES[args[0]]
        nullable = type(None) in typing.get_args(info.type)
        out.append(Field(f"{prefix}{info.name}", typ, nullable))
    return out


# The one description of the context fields, derived from `Context` itself (and `Geo`): the
# checker's `ctx.…` names and types, the compiler's allowed attributes and the key fields all come
# from here, so a field added to `Context` reaches every one of them.
FIELDS: dict[str, Field] = {f.name: f for f in _fields(Context, "")}
# Every field `context_key` holds, in its order (geo's as `geo.<name>`): all of `Context` but `now`
# (whose effect a decision's `expires` bounds).
KEY_FIELDS: tuple[str, ...] = tuple(name for name in FIELDS if name != "now")
# What the clock arguments are derived from besides `now`: the given field, else `now` in the zone.
CLOCK_FIELDS = {"hour": ("hour", "timezone"), "weekday": ("weekday", "timezone")}

ContextKey = Callable[[Context], tuple[object, ...]]


def _empty_key(ctx: Context) -> tuple[object, ...]:
    return ()


def key_function(fields: Iterable[str]) -> ContextKey:
    """A function of a context giving the values of ``fields`` (names of `KEY_FIELDS`), in the order
    of `KEY_FIELDS` whatever the order given: one C-level `operator.attrgetter`, built once."""
    wanted = set(fields)
    unknown = wanted.difference(KEY_FIELDS)
    if unknown:
        raise ValueError(f"not context key fields: {sorted(unknown)}")
    names = [f for f in KEY_FIELDS if f in wanted]
    if not names:
        return _empty_key
    if len(names) == 1:
        one = operator.attrgetter(names[0])
        return lambda ctx: (one(ctx),)
    # With two or more names attrgetter returns a tuple; dotted names read `ctx.geo.<name>`.
    return operator.attrgetter(*names)


# Every field of a context a decision can read, except `now` (whose effect a decision's `expires`
# bounds): equal keys and an unexpired decision mean an equal decision. One C-level attrgetter.
context_key: ContextKey = key_function(KEY_FIELDS)
