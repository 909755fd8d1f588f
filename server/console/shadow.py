"""A shadow candidate: new rules deciding beside the live ones on a share of real traffic.

Never served: the hook only compares. It runs inside `DecisionService.serve` for a sampled share
of decisions (`share`), in the worker, after the served decision is made; whatever it does —
even raise — is caught and counted, and the served decision is never touched. Without a shadow
the service's hook is None: the hot path pays one attribute test.

Workers are separate processes, so the shadow lives on disk (`DATA/console/shadow.json`, written
by whichever worker the console talked to); every worker follows it (`Follower.poll`, once a
second) and writes its own counts to `DATA/console/shadow-stats/<pid>.json`, which the console
adds up. Metrics: `edgeside_shadow_decisions_total{placement,result}` per worker.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

import rules

from ..metrics import Counter

MAX_SHARE = 1.0
# Placement names reach the counts from requests (an unknown placement is still answered): past
# this many, the rest are counted together, so neither the counts nor the metric grow unbounded.
MAX_PLACEMENTS = 256
OTHER = "(other)"
# A shadow decision gets this long; past it the candidate's remaining placements fall back.
SHADOW_BUDGET_S = 0.005


class ShadowSpec(msgspec.Struct, forbid_unknown_fields=True):
    """What `shadow.json` holds: the candidate's text and the share of traffic it sees."""

    id: str
    text: str
    share: float
    started_at: float


class PlacementCounts(msgspec.Struct):
    agree: int = 0
    differ: int = 0
    # "from → to" → count
    diff: dict[str, int] = msgspec.field(default_factory=dict)


class ShadowCounts(msgspec.Struct):
    id: str
    sampled: int = 0
    errors: int = 0
    placements: dict[str, PlacementCounts] = msgspec.field(default_factory=dict)


class ShadowStatus(msgspec.Struct):
    active: bool
    id: str | None = None
    share: float = 0.0
    started_at: float | None = None
    text: str = ""
    sampled: int = 0
    agree: int = 0
    differ: int = 0
    agreement: float | None = None
    errors: int = 0
    workers: int = 0
    placements: dict[str, PlacementCounts] = msgspec.field(default_factory=dict)


def spec_id(text: str, share: float, now: float) -> str:
    return hashlib.sha256(f"{now}:{share}:{text}".encode()).hexdigest()[:16]


def shadow_dir(data_dir: str) -> Path:
    return Path(data_dir) / "console"


_spec_decoder = msgspec.json.Decoder(ShadowSpec)
_counts_decoder = msgspec.json.Decoder(ShadowCounts)
_encode = msgspec.json.Encoder().encode


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_spec(data_dir: str, spec: ShadowSpec) -> None:
    _atomic_write(shadow_dir(data_dir) / "shadow.json", _encode(spec))


def read_spec(data_dir: str) -> ShadowSpec | None:
    try:
        return _spec_decoder.decode((shadow_dir(data_dir) / "shadow.json").read_bytes())
    except (OSError, msgspec.DecodeError):
        return None


def clear_spec(data_dir: str) -> None:
    base = shadow_dir(data_dir)
    with contextlib.suppress(FileNotFoundError):
        (base / "shadow.json").unlink()
    stats = base / "shadow-stats"
    if stats.is_dir():
        for p in stats.glob("*.json"):
            with contextlib.suppress(OSError):
                p.unlink()


class ShadowRun:
    """One worker's running shadow: the compiled candidate and its counts. The hook."""

    def __init__(self, spec: ShadowSpec, engine: rules.Engine, metric: Counter) -> None:
        self.spec = spec
        self.engine = engine
        self.metric = metric
        self.share = max(0.0, min(MAX_SHARE, spec.share))
        self.counts = ShadowCounts(spec.id)
        self.dirty = False
        self._random = random.Random(os.getpid())

    def __call__(
        self,
        world: Any,
        served: rules.Decision,
        visitor_id: str | None,
        profile: rules.ProfileLike | None,
        ctx: rules.Context,
        placements: Sequence[str],
        recent: Any,
    ) -> None:
        if self.share < 1.0 and self._random.random() >= self.share:
            return
        counts = self.counts
        self.dirty = True
        counts.sampled += 1
        try:
            got = self.engine.decide(
                visitor_id=visitor_id,
                profile=profile,
                ctx=ctx,
                placements=placements,
                content=world.content,
                recent=recent,
                deadline=time.monotonic() + SHADOW_BUDGET_S,
            )
            if got.rule_errors:
                counts.errors += 1
            for mine, theirs in zip(served.placements, got.placements, strict=True):
                name = mine.placement
                pc = counts.placements.get(name)
                if pc is None:
                    if len(counts.placements) >= MAX_PLACEMENTS:
                        name = OTHER
                    pc = counts.placements.setdefault(name, PlacementCounts())
                if mine.variant == theirs.variant and mine.content == theirs.content:
                    pc.agree += 1
                    self.metric.inc((name, "agree"))
                else:
                    pc.differ += 1
                    move = f"{mine.variant} → {theirs.variant}"
                    if move in pc.diff or len(pc.diff) < 100:  # bounded: variants come from rules
                        pc.diff[move] = pc.diff.get(move, 0) + 1
                    self.metric.inc((name, "differ"))
        except Exception:  # the candidate must never affect what is served: count and move on
            counts.errors += 1
            self.metric.inc(("*", "error"))


class Follower:
    """Keeps a worker's shadow in step with `shadow.json`, and its counts on disk."""

    def __init__(self, data_dir: str, service: Any, metric: Counter) -> None:
        self.data_dir = data_dir
        self.service = service
        self.metric = metric
        self.run: ShadowRun | None = None

    def poll(self) -> None:
        """Install, replace or remove this worker's shadow; save its counts (in a thread)."""
        spec = read_spec(self.data_dir) if self.data_dir else None
        current = self.run
        if spec is None:
            if current is not None:
                self.service.shadow = None
                self.run = None
            return
        if current is None or current.spec.id != spec.id:
            ruleset, _ = rules.load(spec.text, filename="candidate.yaml")
            if ruleset is None:  # checked before it was written; a hand-edited file
                self.service.shadow = self.run = None
                return
            self.run = ShadowRun(spec, rules.compile_ruleset(ruleset), self.metric)
            self.service.shadow = self.run
            return
        if current.dirty:
            current.dirty = False
            path = shadow_dir(self.data_dir) / "shadow-stats" / f"{os.getpid()}.json"
            _atomic_write(path, _encode(current.counts))

    def stop(self) -> None:
        self.service.shadow = None
        self.run = None


def status(data_dir: str) -> ShadowStatus:
    """The shadow's counts over every worker that reported them."""
    spec = read_spec(data_dir)
    if spec is None:
        return ShadowStatus(active=False)
    out = ShadowStatus(
        active=True, id=spec.id, share=spec.share, started_at=spec.started_at, text=spec.text
    )
    merged: dict[str, PlacementCounts] = {}
    diffs: dict[str, collections.Counter[str]] = {}
    for path in sorted((shadow_dir(data_dir) / "shadow-stats").glob("*.json")):
        try:
            counts = _counts_decoder.decode(path.read_bytes())
        except (OSError, msgspec.DecodeError):
            continue
        if counts.id != spec.id:
            continue
        out.workers += 1
        out.sampled += counts.sampled
        out.errors += counts.errors
        for name, pc in counts.placements.items():
            m = merged.setdefault(name, PlacementCounts())
            m.agree += pc.agree
            m.differ += pc.differ
            diffs.setdefault(name, collections.Counter()).update(pc.diff)
    for name, m in merged.items():
        m.diff = dict(diffs[name].most_common())
        out.agree += m.agree
        out.differ += m.differ
    out.placements = dict(sorted(merged.items()))
    total = out.agree + out.differ
    out.agreement = round(out.agree / total, 6) if total else None
    return out
