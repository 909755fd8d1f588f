"""Until when a decision stays exactly valid: what a compiled function can read of the clock.

`Decision.expires` is an epoch time before which the same inputs (profile, context apart from
``now``, live activity, content and rules objects) give the same decision. It is the minimum of the
bounds of everything the decision used:

- ``days_since(t)`` compared with a number (``days_since(t) > 90``): days_since only grows, so the
  answer flips at most once, at the edge ``t + 90·86400``; the comparison records that edge (a hair
  early, for float rounding) while it is ahead, nothing once it is passed or when t is null
  (`rules.compiler`, ``_since_*``, in the per-request cell ``UNTIL``). A short-circuited operand
  that was not evaluated needs no bound: the evaluated ones decide the result, and each of those is
  covered by its own recorded edge or by the static bits below;
- a function that reads ``now`` otherwise (``ctx.now``, ``days_since`` in arithmetic or compared
  with a non-constant) or live activity (``recent.*``, which decays with time): ``now + 1`` — one
  second is the granularity of the contract;
- a function that reads only the hour or weekday derived from ``now``: the next instant the derived
  clock can change (`rules.context.clock_until`: a quarter hour in UTC) — unless the caller gave
  them;
- content picks (validity windows, the recency bucket) and thompson experiments (the bandit window)
  report their own boundaries (`rules.picks.pick_until`, `Engine._bandit`).

What a function reads is found once, when it is compiled, from the Python AST it is compiled from
(every name and attribute it can load, in nested scopes too); per request the engine only ORs the
bits of the functions it ran and turns them into one bound, with the edges the tracked comparisons
it ran recorded.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

# Bits of what a compiled function reads.
NOW = 1  # ctx.now, days_since(…) but in tracked comparisons, anything not known clock-free
HOUR = 2  # ctx.hour derived from now
WEEKDAY = 4  # ctx.weekday derived from now
RECENT = 8  # live activity (decays with time)
TRACKED = 16  # now, only through comparisons that record their own bound (the UNTIL cell)

_BY_NAME = {
    "NOW": NOW,
    "now": NOW,  # an attribute named `now` (the compiler reads ctx.now as the NOW argument)
    "H": HOUR,
    "W": WEEKDAY,
    "RV": RECENT,
    "RP": RECENT,
    "RC": RECENT,
    "RK": RECENT,
    "UNTIL": TRACKED,
}


def uses(loaded: Iterable[str], globals_: Iterable[str], clock_free: frozenset[str]) -> int:
    """The bits of a function that loads the names ``loaded`` (variables and attributes) and the
    globals ``globals_``. A global not in ``clock_free`` counts as reading ``now``: a helper added
    later must be declared clock-free to keep decisions that use it cacheable."""
    bits = 0
    for name in loaded:
        bits |= _BY_NAME.get(name, 0)
    for name in globals_:
        if name not in clock_free:
            bits |= NOW
    return bits


def next_multiple(now: float, step: float) -> float:
    """Where the window of ``step`` seconds that ``now`` is in ends: the first t with
    ``t // step > now // step``, never later (float rounding is corrected; when nothing sound can
    be said the answer is ``now`` itself: valid for no time at all)."""
    if not step > 0 or not math.isfinite(now):
        return now
    window = now // step
    t = (window + 1.0) * step
    if t // step > window:
        # (window + 1) * step may have rounded up past the boundary: step back to it.
        while (prev := math.nextafter(t, -math.inf)) > now and prev // step > window:
            t = prev
        return t
    # Rounded down: t is still in the window (so early, still sound); step up to the boundary.
    for _ in range(64):
        nxt = math.nextafter(t, math.inf)
        if nxt // step > window:
            return nxt
        t = nxt
    return t if t > now else now
