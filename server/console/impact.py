"""What a candidate rule set would change: logged decisions replayed against it.

`edgeside rules impact` and the console's Impact page both call `replay`, so for the same log,
snapshots and rules they give the same numbers. Each of the last N logged decisions (bounded:
`MAX_LAST`) is decided again from its logged inputs — visitor, site, country, hour and the rest of
the context (`ctx` in the record) at its logged time — once with the active rules and once with
the candidate; a decision has changed when its decision key differs (a variant, a content item or
an arm). Live activity (`recent.*`) is not logged, so both sides decide without it.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import orjson

import rules

DEFAULT_LAST = 10_000
MAX_LAST = 1_000_000
# How many progress reports a replay makes at most (plus its last): a steady bar for the page
# whatever N is, and a bounded number of messages.
PROGRESS_STEPS = 50

Record = dict[str, Any]
# Called with (records done, records in all) while a window is read or replayed; it may raise to
# stop the work (the console stops a replay whose browser went away).
Progress = Callable[[int, int], None]


class Transition(msgspec.Struct):
    from_variant: str
    to_variant: str
    count: int


class PlacementImpact(msgspec.Struct):
    decisions: int = 0
    changed: int = 0
    transitions: list[Transition] = msgspec.field(default_factory=list)


class SegmentImpact(msgspec.Struct):
    """Decisions of visitors in the segment by the active rules (`before`) and the candidate's."""

    before: int = 0
    after: int = 0
    changed: int = 0  # changed decisions of visitors in the segment (by either side)


class SiteImpact(msgspec.Struct):
    decisions: int = 0
    changed: int = 0
    keys_before: int = 0
    keys_after: int = 0


class Cardinality(msgspec.Struct):
    """Distinct (site, page, decision key) among the replayed decisions: the cached copies."""

    before: int
    after: int


class ImpactReport(msgspec.Struct):
    decisions: int
    changed: int
    changed_share: float
    by_placement: dict[str, PlacementImpact]
    by_segment: dict[str, SegmentImpact]
    by_site: dict[str, SiteImpact]
    cache_cardinality: Cardinality
    errors: int  # replayed decisions where the candidate fell back on a rule error
    first_t: float | None
    last_t: float | None
    files: int
    limit: int


class LogWindow(msgspec.Struct):
    records: list[Record]
    files: int


def _lines_newest_first(path: Path) -> Iterator[bytes]:
    try:
        data = path.read_bytes()
    except OSError:
        return
    yield from reversed(data.splitlines())


def last_decisions(
    logs: Path,
    last: int,
    since: float | None = None,
    kinds: tuple[str, ...] = ("decision",),
    progress: Progress | None = None,
) -> LogWindow:
    """The last `last` records of `kinds` under `logs` (a directory or a file), oldest first.

    Files are read newest first and reading stops once enough are found, so a huge log costs
    what the window needs (each file is bounded by the log's rotation size). `progress` hears
    (records found, `last`) after each file."""
    last = max(1, min(last, MAX_LAST))
    if logs.is_file():
        files = [logs]
    else:
        found = []
        for p in logs.rglob("*.ndjson"):
            try:
                found.append((p.stat().st_mtime, p.name, p))
            except OSError:
                continue
        files = [p for _, _, p in sorted(found, reverse=True)]
    out: list[Record] = []
    used = 0
    for path in files:
        used += 1
        for line in _lines_newest_first(path):
            if not line.strip():
                continue
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(rec, dict) or rec.get("kind") not in kinds:
                continue
            t = rec.get("t")
            if not isinstance(t, int | float) or (since is not None and t < since):
                continue
            out.append(rec)
        if progress is not None:
            progress(min(len(out), last), last)
        if len(out) >= last:
            break
    out.sort(key=lambda r: float(r["t"]))
    return LogWindow(out[-last:], used)


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and len(value) <= 1024 else None


def context_of(rec: Record) -> rules.Context:
    """The logged context of a decision record, at its logged time."""
    extra = rec.get("ctx")
    extra = extra if isinstance(extra, dict) else {}
    hour = rec.get("hour")
    weekday = extra.get("weekday")
    return rules.Context(
        site=_str(rec.get("site")) or "default",
        locale=_str(extra.get("locale")),
        url=_str(extra.get("url")),
        path=_str(extra.get("path")),
        referrer=_str(extra.get("referrer")),
        device=_str(extra.get("device")),
        timezone=_str(extra.get("timezone")),
        weather=_str(extra.get("weather")),
        geo=rules.Geo(
            country=_str(rec.get("country")),
            region=_str(extra.get("region")),
            city=_str(extra.get("city")),
        ),
        hour=hour if isinstance(hour, int) and 0 <= hour <= 23 else None,
        weekday=weekday if isinstance(weekday, int) and 0 <= weekday <= 6 else None,
        consent=extra.get("consent") is not False,
        now=float(rec["t"]),
    )


class Profiles:
    """How a replay finds a logged visitor: `p:ID` is a canonical id, `type:value` an alias."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader

    def find(self, visitor: str | None) -> tuple[Any, str | None]:
        """(profile or None, the id experiments bucket by)."""
        if not visitor or ":" not in visitor:
            return None, None
        kind, _, value = visitor.partition(":")
        profile = None
        if self.reader is not None:
            try:
                profile = (
                    self.reader.get(value) if kind == "p" else self.reader.lookup({kind: value})
                )
            except Exception:  # a corrupt record: replay as the server would, anonymously
                profile = None
        return profile, profile.id if profile is not None else value


def replay(
    window: LogWindow,
    active: rules.Engine,
    candidate: rules.Engine,
    profiles: Any = None,
    content: rules.ContentCatalog | None = None,
    limit: int = DEFAULT_LAST,
    progress: Progress | None = None,
) -> ImpactReport:
    """Decide every record of `window` with both rule sets and count what changes.

    `progress` hears (records replayed, records in the window) about `PROGRESS_STEPS` times,
    and once at the end."""
    finder = Profiles(profiles)
    by_placement: dict[str, PlacementImpact] = {}
    moves: dict[str, collections.Counter[tuple[str, str]]] = {}
    by_segment: dict[str, SegmentImpact] = {}
    by_site: dict[str, SiteImpact] = {}
    keys_before: dict[str, set[tuple[str | None, str]]] = {}
    keys_after: dict[str, set[tuple[str | None, str]]] = {}
    changed = errors = 0
    total = len(window.records)
    step = max(1, -(-total // PROGRESS_STEPS))  # ceil: at most PROGRESS_STEPS reports, + the last
    for done, rec in enumerate(window.records):
        if progress is not None and done % step == 0:
            progress(done, total)
        names = [
            str(p.get("placement"))
            for p in rec.get("placements") or []
            if isinstance(p, dict) and isinstance(p.get("placement"), str)
        ][:64]
        if not names:
            continue
        ctx = context_of(rec)
        profile, visitor_id = finder.find(_str(rec.get("visitor")) if ctx.consent else None)
        before = active.decide(
            visitor_id=visitor_id, profile=profile, ctx=ctx, placements=names, content=content
        )
        after = candidate.decide(
            visitor_id=visitor_id, profile=profile, ctx=ctx, placements=names, content=content
        )
        if after.rule_errors:
            errors += 1
        differs = before.key != after.key
        changed += differs
        site = by_site.setdefault(ctx.site, SiteImpact())
        site.decisions += 1
        site.changed += differs
        keys_before.setdefault(ctx.site, set()).add((ctx.path, before.key))
        keys_after.setdefault(ctx.site, set()).add((ctx.path, after.key))
        for b, a in zip(before.placements, after.placements, strict=True):
            pi = by_placement.setdefault(b.placement, PlacementImpact())
            pi.decisions += 1
            if (b.variant, b.content, b.arm) != (a.variant, a.content, a.arm):
                pi.changed += 1
                moves.setdefault(b.placement, collections.Counter())[(b.variant, a.variant)] += 1
        for name in before.segments:
            by_segment.setdefault(name, SegmentImpact()).before += 1
        for name in after.segments:
            by_segment.setdefault(name, SegmentImpact()).after += 1
        if differs:
            for name in set(before.segments) | set(after.segments):
                by_segment[name].changed += 1
    if progress is not None:
        progress(total, total)
    for name, counter in moves.items():
        by_placement[name].transitions = [
            Transition(f, t, n) for (f, t), n in counter.most_common()
        ]
    for name, site in by_site.items():
        site.keys_before = len(keys_before[name])
        site.keys_after = len(keys_after[name])
    decided = sum(s.decisions for s in by_site.values())
    records = window.records
    return ImpactReport(
        decisions=decided,
        changed=changed,
        changed_share=round(changed / decided, 6) if decided else 0.0,
        by_placement=dict(sorted(by_placement.items())),
        by_segment=dict(sorted(by_segment.items())),
        by_site=dict(sorted(by_site.items())),
        cache_cardinality=Cardinality(
            sum(len(k) for k in keys_before.values()), sum(len(k) for k in keys_after.values())
        ),
        errors=errors,
        first_t=float(records[0]["t"]) if records else None,
        last_t=float(records[-1]["t"]) if records else None,
        files=window.files,
        limit=limit,
    )


def render_text(report: ImpactReport) -> str:
    """The human form of `edgeside rules impact`."""
    lines = [
        f"{report.changed} of {report.decisions} decisions change "
        f"({report.changed_share:.1%}); cache copies {report.cache_cardinality.before} → "
        f"{report.cache_cardinality.after}"
    ]
    if report.first_t is not None and report.last_t is not None:
        fmt = "%Y-%m-%d %H:%M:%S"
        lines.append(
            f"replayed the last {report.decisions} logged decisions (at most {report.limit}), "
            f"{time.strftime(fmt, time.gmtime(report.first_t))} – "
            f"{time.strftime(fmt, time.gmtime(report.last_t))} UTC, from {report.files} file(s)"
        )
    if report.errors:
        lines.append(f"the candidate hit a rule error in {report.errors} decision(s)")
    lines.append("by placement:")
    for name, p in report.by_placement.items():
        lines.append(f"  {name}: {p.changed} of {p.decisions} change")
        lines.extend(f"    {t.from_variant} → {t.to_variant}: {t.count}" for t in p.transitions)
    lines.append("by site:")
    for name, s in report.by_site.items():
        lines.append(
            f"  {name}: {s.changed} of {s.decisions} change; keys {s.keys_before} → {s.keys_after}"
        )
    lines.append("by segment (decisions in it, active → candidate; changed):")
    for name, g in report.by_segment.items():
        lines.append(f"  {name}: {g.before} → {g.after}; {g.changed} changed")
    return "\n".join(lines) + "\n"
