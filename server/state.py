"""What one worker process holds: settings, the snapshot world, the decision service, metrics."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from . import auth
from .config import Secrets, Settings
from .decide.context import ContextBuilder, check_placements
from .decide.service import DecisionService
from .decide.world import KINDS, World, WorldHolder
from .decision_log import DecisionLog, Record
from .live.bandit import StoreArmStats
from .live.events import Ingest, Pending, live_key
from .live.store import LiveLimits, LiveStore, open_store
from .live.triggers import Triggers
from .memo import AnswerMemo
from .metrics import Metrics
from .visitor import Visitor


class AppState:
    def __init__(self, settings: Settings, secrets: Secrets) -> None:
        self.settings = settings
        self.secrets = secrets
        self.metrics = Metrics()
        self.holder = WorldHolder(settings.data, secrets.signing_key)
        self.holder.on_swap.append(self._record_swap)
        self.builder = ContextBuilder(settings)
        self.service = DecisionService(
            self.metrics,
            settings.time_budget_ms,
            settings.memo_ttl_s,
            settings.memo_max_entries,
            settings.memo_max_bytes,
        )
        self.started_at = time.time()
        # Readiness details of optional parts (the fleet's broker link): warnings only.
        self.notes: list[Callable[[], list[str]]] = []
        # Counts the hot paths keep to themselves and add to the metrics only before a scrape.
        self.before_scrape: list[Callable[[], None]] = []
        # Every memo of this worker by name: the service's memo of decisions by what they depend
        # on, and over it the routes' memos of whole answers, which each room adds (`add_memos`).
        # All are cleared when a new world is swapped in, and counted before a scrape.
        self.memos: dict[str, AnswerMemo[Any]] = {"decision": self.service.memo}
        # Scoped credentials (server/auth.py): the digests from EDGESIDE_TOKENS_*, and the admin
        # token these secrets hold (not the environment's: a test builds the app with its own).
        environ = {k: v for k, v in os.environ.items() if k.startswith(auth.ENV_PREFIX)}
        environ[auth.ADMIN_ENV] = secrets.admin_token
        self.credentials = auth.Credentials.from_environ(environ)
        auth.configure(self.credentials)
        self.ingest = Ingest(settings.live)
        self.live: LiveStore | None = None
        self.triggers: Triggers | None = None
        self.decision_log = DecisionLog(settings.decision_log, settings.data)
        self.service.log = self.decision_log

    def add_memos(self, memos: dict[str, AnswerMemo[Any]]) -> None:
        """Memos of answers a room keeps: cleared with every new world, counted in the metrics."""
        self.memos.update(memos)

    def open_live(self) -> None:
        """Open the node's live store in this worker (after the fork, SPEC §10)."""
        s = self.settings.live
        if not s.enabled:
            return
        limits = LiveLimits(
            ttl_s=s.ttl_s,
            max_list=s.max_list,
            max_categories=s.max_categories,
            half_life_s=s.half_life_s,
            max_visitors=s.max_visitors,
            high_water=s.budget_high_pct / 100,
            low_water=s.budget_low_pct / 100,
            withdrawal_water=s.budget_withdrawal_pct / 100,
            evict_sample=s.evict_sample,
        )
        self.live = open_store(
            self.settings.data, s.dir, s.map_size_mb * 1024 * 1024, limits, s.stamp_slots
        )
        self.service.live = self.live
        if self.live is not None:
            self.service.arm_stats = StoreArmStats(self.live, s.bandit_window_s)
            self.triggers = Triggers(self.live, s)
            self.service.triggers = self.triggers

    def close_live(self) -> None:
        self.decision_log.close()
        self.service.triggers = self.triggers = None
        if self.live is not None:
            self.service.live = None
            self.service.arm_stats = None
            self.live.close()
            self.live = None

    def resolve(self, visitor: Visitor) -> str | None:
        """A visitor's live key, through the current profiles' alias index."""
        world = self.holder.acquire()
        try:
            profile = self.service.lookup(world, visitor)
        finally:
            self.holder.release(world)
        return live_key(profile.id if profile is not None else None, visitor)

    def log_events(self, batch: list[tuple[Pending, str | None]]) -> None:
        """Every event goes to the decision log; identifiers only with consent."""
        dlog = self.decision_log
        if not dlog.enabled:
            return
        live = self.live
        for p, key in batch:
            e = p.event
            visitor = key
            if not p.consent or (e.type == "consent" and not e.value):
                visitor = None
            elif key is not None and live is not None:
                try:
                    rec, _ = live.read(key, time.time())
                    if rec is not None and rec.consent is False:
                        visitor = None
                except Exception:
                    visitor = None
            record: Record = {
                "t": round(p.ts, 3),
                "kind": "event",
                "type": e.type,
                "visitor": visitor,
                "placement": e.placement,
                "variant": e.variant,
                "experiment": e.experiment,
                "arm": e.arm,
                "content_id": e.content_id,
                "value": e.value,
                "country": p.country,
                "hour": time.gmtime(p.ts).tm_hour,
            }
            dlog.add(record)

    def refresh_gauges(self) -> None:
        """Bring the metrics up to date before a scrape: gauges, and memo reuses not counted yet."""
        self.service.flush_counts()
        for count in self.before_scrape:
            count()
        m = self.metrics
        for name, memo in self.memos.items():
            m.memo_lookups.set((name, "hit"), memo.hits)
            m.memo_lookups.set((name, "miss"), memo.misses)
        dlog = self.decision_log
        m.log_records.set(("written",), dlog.written)
        for reason, n in dlog.dropped.items():
            m.log_records.set((f"dropped_{reason}",), n)
        m.live_writes.values[("queue_dropped",)] = float(self.ingest.dropped)
        if self.triggers is not None:
            for result, n in self.triggers.counts.items():
                m.triggers.set((result,), n)
        if self.live is not None:
            with contextlib.suppress(Exception):
                m.live_visitors.set((), self.live.count())
                m.live_bytes.set(("used",), self.live.used_bytes())
                m.live_bytes.set(("high_water",), self.live.map_size * self.live.limits.high_water)

    def _record_swap(self, world: World) -> None:
        # Answers of the old world are never reused; dropping them now also frees the memory.
        for memo in self.memos.values():
            memo.clear()
        metrics = self.metrics
        metrics.snapshot_swaps.inc()
        metrics.snapshot_version.values.clear()
        for kind, version in world.versions.items():
            metrics.snapshot_version.set((kind, version), 1)
            metrics.snapshot_loaded.set((kind,), world.loaded_at.get(kind, 0.0))

    def check_placements(self, names: list[str]) -> None:
        """Raise `PlacementError` unless `names` are placements a request may ask for."""
        check_placements(names, self.settings.limits.max_placements)

    def authorized(self, headers: Mapping[bytes, bytes], scope: str = "push") -> bool:
        """True if the caller holds `scope` (server/auth.py; kept for callers of the single admin
        token of old — new code calls `auth.require` and answers its 401/403)."""
        return auth.require(headers, scope, self.credentials) is None

    def readiness(self) -> tuple[bool, list[str]]:
        world = self.holder.current
        warnings = [f"{kind}: {msg}" for kind, msg in sorted(world.errors.items())]
        if not self.secrets.signing_key:
            warnings.append("no EDGESIDE_SIGNING_KEY: snapshots are accepted unsigned")
        missing = [kind for kind in KINDS if kind not in world.versions]
        warnings.extend(f"{kind}: no snapshot loaded" for kind in missing)
        for note in self.notes:
            warnings.extend(note())
        return not missing, warnings
