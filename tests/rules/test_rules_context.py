"""Clock fields derived from the request time and time zone."""

from __future__ import annotations

from rules.context import Context, clock

THURSDAY_2026_05_28_2026_UTC = 1_780_000_000.0


def test_clock_in_time_zones() -> None:
    now = THURSDAY_2026_05_28_2026_UTC
    assert clock(Context(now=now)) == (20, 3)
    assert clock(Context(now=now, timezone="Europe/Paris")) == (22, 3)
    assert clock(Context(now=now, timezone="Asia/Kolkata")) == (1, 4)  # a half-hour offset
    assert clock(Context(now=now, timezone="Nowhere/City")) == (20, 3)


def test_given_fields_win() -> None:
    assert clock(Context(now=0.0, hour=7, weekday=6)) == (7, 6)
    assert clock(Context(now=THURSDAY_2026_05_28_2026_UTC, hour=7)) == (7, 3)
