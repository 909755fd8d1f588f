"""The Analytics page's numbers: `server/report`'s groups, rates, intervals and lift.

Lift compares each variant of a placement with that placement's reference arm — the variant
called `control`, else `default`, else the placement's declared default variant — as the
difference of click-through rates in percentage points with a 95 % Newcombe (hybrid Wilson)
interval, and as a ratio. A group under `SMALL_IMPRESSIONS` impressions (or a comparison whose
either side is) is flagged: its rate is too unsure to call a winner.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from ..offline.report.analytics import Row, build, wilson

SMALL_IMPRESSIONS = 100
VIEWS: dict[str, tuple[str, ...]] = {
    "variant": ("placement", "variant"),
    "segment": ("segment",),
    "country": ("country",),
    "hour": ("hour",),
}


class Group(msgspec.Struct):
    group: list[str]
    impressions: float
    clicks: int
    conversions: int
    ctr: float
    ctr_low: float
    ctr_high: float
    cr: float
    cr_low: float
    cr_high: float
    small: bool


class Lift(msgspec.Struct):
    placement: str
    variant: str
    reference: str
    ctr: float
    reference_ctr: float
    diff: float  # percentage points / 100 (a difference of proportions)
    diff_low: float
    diff_high: float
    ratio: float | None
    small: bool


class AnalyticsBody(msgspec.Struct):
    records: int
    skipped: int
    views: dict[str, list[Group]]
    lift: list[Lift]
    small_groups: int
    small_threshold: int


def _group(row: Row) -> Group:
    lo, hi = row.ctr_ci
    clo, chi = row.conversion_ci
    return Group(
        list(row.group),
        round(row.impressions, 3),
        row.clicks,
        row.conversions,
        row.ctr,
        lo,
        hi,
        row.conversion_rate,
        clo,
        chi,
        row.impressions < SMALL_IMPRESSIONS,
    )


def newcombe(c1: float, n1: float, c2: float, n2: float) -> tuple[float, float, float]:
    """Difference of two proportions (1 − 2) with its 95 % Newcombe hybrid-score interval."""
    p1 = c1 / n1 if n1 else 0.0
    p2 = c2 / n2 if n2 else 0.0
    l1, u1 = wilson(min(c1, n1), n1)
    l2, u2 = wilson(min(c2, n2), n2)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return d, low, high


def lifts(rows: Iterable[Row], defaults: Mapping[str, str]) -> list[Lift]:
    by_placement: dict[str, dict[str, Row]] = {}
    for r in rows:
        placement, variant = r.group
        by_placement.setdefault(placement, {})[variant] = r
    out: list[Lift] = []
    for placement, variants in sorted(by_placement.items()):
        ref_name = next(
            (
                v
                for v in ("control", "default", defaults.get(placement, "default"))
                if v in variants
            ),
            None,
        )
        if ref_name is None:
            continue
        ref = variants[ref_name]
        for name, r in sorted(variants.items()):
            if name == ref_name:
                continue
            d, lo, hi = newcombe(r.clicks, r.impressions, ref.clicks, ref.impressions)
            out.append(
                Lift(
                    placement,
                    name,
                    ref_name,
                    r.ctr,
                    ref.ctr,
                    d,
                    lo,
                    hi,
                    r.ctr / ref.ctr if ref.ctr else None,
                    min(r.impressions, ref.impressions) < SMALL_IMPRESSIONS,
                )
            )
    return out


def analytics(records: list[dict[str, Any]], defaults: Mapping[str, str]) -> AnalyticsBody:
    """Every view of the page from one pass over the records per view."""
    views: dict[str, list[Group]] = {}
    skipped = total = 0
    variant_rows: list[Row] = []
    for name, by in VIEWS.items():
        report = build(records, by)
        total, skipped = report.records, report.skipped
        rows = report.rows
        if name == "hour":
            rows = sorted(rows, key=lambda r: int(r.group[0]) if r.group[0].isdigit() else 99)
        if name == "variant":
            variant_rows = rows
        views[name] = [_group(r) for r in rows[:200]]
    small = sum(1 for g in views["variant"] if g.small)
    return AnalyticsBody(
        total, skipped, views, lifts(variant_rows, defaults), small, SMALL_IMPRESSIONS
    )
