"""Thompson sampling for `strategy: thompson` experiments, deterministic per time window.

Once per window the arms' weights are the probability that each arm is the best, estimated by a
fixed number of draws from each arm's Beta(1 + successes, 1 + failures) posterior with a random
generator seeded from the experiment's salt and the window number. With the counts frozen per
window (the `ArmStats` contract), every worker and node computes the same weights. Each arm keeps
at least the exploration share, so a late-blooming arm is still measured.

Visitors are bucketed with ``salt:window`` as the salt: sticky within a window, re-drawn after it.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence

DRAWS = 2000


def seed_of(salt: str, window: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{salt}:{window}".encode()).digest()[:8], "big")


def thompson_weights(
    arms: Sequence[str],
    counts: Mapping[str, tuple[int, int]],
    seed: int,
    exploration: float,
    draws: int = DRAWS,
) -> list[float]:
    """Shares summing to 1, each at least `exploration` (capped so they can all fit)."""
    n = len(arms)
    floor = min(max(exploration, 0.0), 1.0 / n)
    rng = random.Random(seed)
    params = []
    for arm in arms:
        s, t = counts.get(arm, (0, 0))
        s = max(0, int(s))
        failures = max(0, int(t) - s)
        params.append((1.0 + s, 1.0 + failures))
    wins = [0] * n
    for _ in range(draws):
        best, best_i = -1.0, 0
        for i, (a, b) in enumerate(params):
            x = rng.betavariate(a, b)
            if x > best:
                best, best_i = x, i
        wins[best_i] += 1
    spread = 1.0 - n * floor
    return [floor + spread * w / draws for w in wins]
