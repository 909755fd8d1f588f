"""Content analytics from decision logs: impressions, clicks, conversions per group, with Wilson
95 % confidence intervals.

- An **impression** is one placement of one logged decision, weighted by ``1 / sample`` so a
  sampled log estimates the whole traffic (exact counts when the sample rate is 1).
- A **click** is a `click` event, a **conversion** a `purchase` event. Each is attributed to the
  latest earlier decision of the same visitor for the same placement (and variant, when the event
  names one), whose variant, segments, country and hour it takes; events of visitors without an
  identifier (no consent) or without such a decision are grouped by their own fields, with the
  segment ``(none)``.
- ``segment`` fans out: a decision in two segments counts once in each segment's group.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

DIMENSIONS = ("placement", "variant", "segment", "country", "hour", "experiment", "arm", "site")
Z95 = 1.959963984540054
NONE = "(none)"


def wilson(successes: float, trials: float, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion; (0, 0) without trials."""
    if trials <= 0:
        return 0.0, 0.0
    p = min(max(successes / trials, 0.0), 1.0)
    z2 = z * z
    denom = 1.0 + z2 / trials
    center = (p + z2 / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denom
    return max(0.0, center - half), min(1.0, center + half)


@dataclass(slots=True)
class Row:
    group: tuple[str, ...]
    impressions: float = 0.0
    clicks: int = 0
    conversions: int = 0

    @property
    def ctr(self) -> float:
        return self.clicks / self.impressions if self.impressions else 0.0

    @property
    def conversion_rate(self) -> float:
        return self.conversions / self.impressions if self.impressions else 0.0

    @property
    def ctr_ci(self) -> tuple[float, float]:
        return wilson(min(self.clicks, self.impressions), self.impressions)

    @property
    def conversion_ci(self) -> tuple[float, float]:
        return wilson(min(self.conversions, self.impressions), self.impressions)


@dataclass(slots=True)
class Report:
    by: tuple[str, ...]
    rows: list[Row] = field(default_factory=list)
    records: int = 0
    skipped: int = 0


def read_records(logs: Path) -> Iterator[dict[str, Any]]:
    """Every record of every `*.ndjson` file under `logs` (a file or a directory)."""
    files = [logs] if logs.is_file() else sorted(logs.rglob("*.ndjson"))
    for path in files:
        with path.open("rb") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    yield {"kind": "__bad__"}
                    continue
                if isinstance(record, dict):
                    yield record


def _str(value: object) -> str:
    return NONE if value is None or value == "" else str(value)


def _values(dim: str, fields: dict[str, object], segments: Sequence[str]) -> list[str]:
    if dim == "segment":
        return list(segments) or [NONE]
    return [_str(fields.get(dim))]


def _groups(
    by: Sequence[str], fields: dict[str, object], segments: Sequence[str]
) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = [()]
    for dim in by:
        out = [(*g, v) for g in out for v in _values(dim, fields, segments)]
    return out


def build(
    records: Iterable[dict[str, Any]],
    by: Sequence[str],
    since: float | None = None,
    until: float | None = None,
) -> Report:
    report = Report(tuple(by))
    rows: dict[tuple[str, ...], Row] = {}
    # (visitor, placement) → decisions sorted by time: (t, fields, segments)
    shown: dict[tuple[str, str], list[tuple[float, dict[str, object], list[str]]]] = {}
    events: list[dict[str, Any]] = []

    def row(group: tuple[str, ...]) -> Row:
        r = rows.get(group)
        if r is None:
            r = rows[group] = Row(group)
        return r

    for rec in records:
        t = rec.get("t")
        if rec.get("kind") not in ("decision", "event") or not isinstance(t, int | float):
            report.skipped += 1
            continue
        if (since is not None and t < since) or (until is not None and t >= until):
            continue
        report.records += 1
        if rec["kind"] == "event":
            events.append(rec)
            continue
        sample = rec.get("sample", 1.0)
        weight = 1.0 / sample if isinstance(sample, int | float) and sample > 0 else 1.0
        segments = [str(s) for s in rec.get("segments") or []]
        for p in rec.get("placements") or []:
            fields: dict[str, object] = {
                "placement": p.get("placement"),
                "variant": p.get("variant"),
                "experiment": p.get("experiment"),
                "arm": p.get("arm"),
                "country": rec.get("country"),
                "hour": rec.get("hour"),
                "site": rec.get("site"),
            }
            for g in _groups(by, fields, segments):
                row(g).impressions += weight
            visitor = rec.get("visitor")
            if visitor:
                shown.setdefault((str(visitor), str(p.get("placement"))), []).append(
                    (float(t), fields, segments)
                )
    for seq in shown.values():
        seq.sort(key=lambda x: x[0])
    times = {k: [x[0] for x in seq] for k, seq in shown.items()}
    for ev in events:
        kind = ev.get("type")
        if kind not in ("click", "purchase"):
            continue
        fields = {
            "placement": ev.get("placement"),
            "variant": ev.get("variant"),
            "experiment": ev.get("experiment"),
            "arm": ev.get("arm"),
            "country": ev.get("country"),
            "hour": ev.get("hour"),
            "site": ev.get("site"),
        }
        ev_segments: list[str] = []
        visitor = ev.get("visitor")
        where = (str(visitor), str(ev.get("placement")))
        before = shown.get(where) if visitor else None
        if before:
            i = bisect.bisect_right(times[where], float(ev["t"])) - 1
            if i >= 0 and (ev.get("variant") in (None, before[i][1].get("variant"))):
                fields, ev_segments = before[i][1], before[i][2]
        for g in _groups(by, fields, ev_segments):
            r = row(g)
            if kind == "click":
                r.clicks += 1
            else:
                r.conversions += 1
    report.rows = sorted(rows.values(), key=lambda r: r.group)
    return report
