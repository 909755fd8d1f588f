"""Deterministic experiment bucketing: no state, the same answer on every worker, node and restart.

The hash, stated so any other system can reproduce an assignment::

    u = int.from_bytes(sha256(f"{salt}:{visitor_id}".encode("utf-8")).digest()[:8], "big") / 2**64

``u`` is uniform in [0, 1). A visitor is in the holdout when ``u < holdout``; otherwise
``v = (u - holdout) / (1 - holdout)`` walks the arms' cumulative weights in declared order
(weights are shares summing to 1) and picks the first arm whose cumulative weight exceeds ``v``.
Visitors without an id (anonymous, or no consent) get the first declared arm — the control.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HOLDOUT = "holdout"
_SCALE = float(2**64)


def unit(salt: str, visitor_id: str) -> float:
    """The visitor's stable position in [0, 1) for this salt."""
    digest = hashlib.sha256(f"{salt}:{visitor_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


class Bucketer:
    """Arm assignment for one experiment; thresholds are computed once."""

    __slots__ = ("arms", "cumulative", "holdout", "salt")

    def __init__(self, salt: str, arms: Sequence[tuple[str, float]], holdout: float) -> None:
        self.salt = salt
        self.arms = tuple(name for name, _ in arms)
        self.holdout = holdout
        total = 0.0
        cumulative = []
        for _, w in arms:
            total += w
            cumulative.append(total)
        # Rounding must never leave a visitor past the last arm.
        cumulative[-1] = float("inf")
        self.cumulative = tuple(cumulative)

    def assign(self, visitor_id: str | None) -> str:
        if not visitor_id:
            return self.arms[0]
        u = unit(self.salt, visitor_id)
        if u < self.holdout:
            return HOLDOUT
        v = (u - self.holdout) / (1.0 - self.holdout)
        for name, edge in zip(self.arms, self.cumulative, strict=True):
            if v < edge:
                return name
        return self.arms[-1]  # pragma: no cover - the last edge is infinite
