"""A placement compiled: its function and what a decision needs beside it."""

from __future__ import annotations

from dataclasses import dataclass, field

from rules.bucketing import Bucketer
from rules.compiler import Fn
from rules.expiry import NOW
from rules.model import Experiment, Placement, Rule


@dataclass(slots=True, eq=False)
class Program:
    placement: Placement
    fn: Fn
    rules: tuple[Rule, ...]
    experiments: tuple[tuple[Experiment, Bucketer], ...]
    uses: int = NOW  # what `fn` can read of the clock and live data (rules/expiry.py)
    explain: dict[int, Fn] = field(default_factory=dict)  # node id → value function (explain)
