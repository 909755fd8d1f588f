"""One decision's inputs and running totals, and when the decision expires.

`arguments` lays out what every compiled function takes (`rules.compiler.ARGS`); `Request` is what
the engine's steps (segments, each placement, experiments, picks, actions) share and add to; and
`expires` turns what they ran into the decision's `expires` (`rules.expiry`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import msgspec

from rules.context import Context
from rules.expiry import HOUR, NOW, RECENT, WEEKDAY
from rules.interfaces import ActivityLike, ArmStats, ContentCatalog, ProfileLike

EMPTY_MAP: Mapping[str, float] = {}
_EMPTY_ATTRS: Mapping[str, object] = {}
_EMPTY_SEQ: tuple[str, ...] = ()
_INF = math.inf
_NOW_OR_RECENT = NOW | RECENT
_NO_ACTIVITY = (_EMPTY_SEQ, _EMPTY_SEQ, _EMPTY_SEQ, EMPTY_MAP)
_NO_PROFILE = (_EMPTY_ATTRS, EMPTY_MAP, EMPTY_MAP, EMPTY_MAP, _EMPTY_SEQ, None)

Args = tuple[object, ...]


def arguments(
    profile: ProfileLike | None,
    recent: ActivityLike | None,
    ctx: Context,
    hour: int,
    weekday: int,
    cell: list[float] | None,
) -> tuple[Args, Args]:
    """What every compiled function takes (`rules.compiler.ARGS`), before and after the segment
    values S: the profile's (A I N L G PID) and the context's (X H W NOW); live activity's
    (RV RP RC RK) and the clock cell when any function tracks days_since edges. Built directly
    (no intermediate tuples): this runs on every request."""
    p = profile
    if p is not None:
        head: Args = (
            p.attributes,
            p.interests,
            p.counters,
            p.last_seen,
            p.segments,
            p.id,
            ctx,
            hour,
            weekday,
            ctx.now,
        )
    else:
        head = (*_NO_PROFILE, ctx, hour, weekday, ctx.now)
    r = recent
    if r is None:
        return head, (_NO_ACTIVITY if cell is None else (*_NO_ACTIVITY, cell))
    if cell is None:
        return head, (r.views, r.purchases, r.cart, r.categories)
    return head, (r.views, r.purchases, r.cart, r.categories, cell)


# Indexes in the whole argument tuple (head, S, tail).
NOW_ARG = 9  # of NOW
CTX_ARG = 6  # of X
INTERESTS_ARG = 1  # of I


class Request(msgspec.Struct, gc=False):
    """What the steps of one decision share: its inputs, and the totals they add to — `until`
    (the earliest boundary picks, bandit windows and fallbacks report), `ttl`, `errors`, `uses`
    (what the functions run can read of the clock and live data). Built on every request, so a
    C-level struct (no cycles: nothing refers back to it) holding no more than the steps need."""

    args: Args
    visitor_id: str | None
    content: ContentCatalog | None
    recent: ActivityLike | None
    stats: ArmStats | None
    deadline: float | None
    errors: int = 0
    uses: int = 0
    late: bool = False
    until: float = _INF
    ttl: int | None = None


def expires(req: Request, ctx: Context, cell: list[float] | None, turn: float) -> float:
    """The instant before which the same inputs give the same decision (`Decision.expires`)."""
    until = req.until
    now = ctx.now
    if cell is not None and cell[0] < until:
        until = cell[0]
    if req.errors:
        until = min(until, now + 1.0)  # rule errors: no promise beyond the contract's second
    uses = req.uses
    if uses:
        # Only what can change with `now`: hour/weekday the caller gave do not (then `turn` is
        # inf), and without live activity the recent.* arguments are empty whatever the time.
        if uses & _NOW_OR_RECENT and (uses & NOW or req.recent is not None):
            until = min(until, now + 1.0)
        elif turn < until and (
            (uses & HOUR and ctx.hour is None) or (uses & WEEKDAY and ctx.weekday is None)
        ):
            until = turn
    return until
