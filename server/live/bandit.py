"""Arm statistics for `strategy: thompson` experiments, read from the live store.

Counts come from events that carry `experiment` and `arm`: a `view` is a trial, a `click` or a
`purchase` a success. They are frozen per window in the store (first reader wins), so all workers
of the node compute the same weights for the window.
"""

from __future__ import annotations

from collections.abc import Mapping

from .store import LiveStore


class StoreArmStats:
    """Satisfies `rules.interfaces.ArmStats`."""

    def __init__(self, store: LiveStore, window_s: float) -> None:
        self.store = store
        self._window_s = window_s

    @property
    def window_s(self) -> float:
        return self._window_s

    def counts(self, experiment_id: str, window: int) -> Mapping[str, tuple[int, int]]:
        return self.store.frozen_counts(experiment_id, window)
