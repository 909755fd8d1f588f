"""One decision's inputs and running totals, and when the decision expires.

`arguments` lays out what every compiled function takes (`rules.compiler.ARGS`); `Request` is what
the engine's steps (segments, each placement, experiments, picks, actions) share and add to; and
`expires` turns what they ran into the decision's `expires` (`rules.expiry`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from rules.context import Context
from rules.expiry import HOUR, NOW, RECENT, WEEKDAY
from rules.interfaces import ActivityLike, ArmStats, ContentCatalog, ProfileLike

EMPTY_MAP: Mapping[str, float] = {}
_EMPTY_ATTRS: Mapping[str, object] = {}
_EMPTY_SEQ: tuple[str, ...] = ()
_INF = math.inf
_NOW_OR_RECENT = NOW | RECENT
_NO_PROFILE = (_EMPTY_ATTRS, EMPTY_MAP, EMPTY_MAP, EMPTY_MAP, _EMPTY_SEQ, None)
_NO_ACTIVITY = (_EMPTY_SEQ, _EMPTY_SEQ, _EMPTY_SEQ, EMPTY_MAP)

Args = tuple[object, ...]


def arguments(
    profile: ProfileLike | None,
    recent: ActivityLike | None,
    ctx: Context,
    hour: int,
    weekday: int,
    cell: list[float] | None,
) -> tuple[Args, Args]:
    """The compiled functions' arguments before and after the segment values ``S``: the profile's
    (A I N L G PID), the context's (X H W NOW), live activity's (RV RP RC RK) and the clock cell
    when any function tracks days_since edges (`rules.compiler`)."""
    if profile is not None:
        p: Args = (
            profile.attributes,
            profile.interests,
            profile.counters,
            profile.last_seen,
            profile.segments,
            profile.id,
        )
    else:
        p = _NO_PROFILE
    if recent is not None:
        r: Args = (recent.views, recent.purchases, recent.cart, recent.categories)
    else:
        r = _NO_ACTIVITY
    return (*p, ctx, hour, weekday, ctx.now), (r if cell is None else (*r, cell))


class Request:
    """What the steps of one decision share: its inputs, and the totals they add to — `until`
    (the earliest boundary picks, bandit windows and fallbacks report), `ttl`, `errors`, `uses`
    (what the functions run can read of the clock and live data)."""

    __slots__ = (
        "args",
        "content",
        "deadline",
        "errors",
        "interests",
        "late",
        "now",
        "pick_locale",
        "recent",
        "stats",
        "ttl",
        "until",
        "uses",
        "visitor_id",
    )

    def __init__(
        self,
        visitor_id: str | None,
        content: ContentCatalog | None,
        recent: ActivityLike | None,
        stats: ArmStats | None,
        ctx: Context,
        deadline: float | None,
        interests: Mapping[str, float],
    ) -> None:
        self.visitor_id = visitor_id
        self.content = content
        self.recent = recent
        self.stats = stats
        self.now = ctx.now
        self.deadline = deadline
        self.interests = interests
        self.args: Args = ()
        self.pick_locale: str | None = None
        self.late = False
        self.until = _INF
        self.ttl: int | None = None
        self.errors = 0
        self.uses = 0


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
