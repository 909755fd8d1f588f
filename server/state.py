"""What one worker process holds: settings, the snapshot world, the decision service, metrics."""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Mapping

import rules

from .asgi import Headers
from .config import Secrets, Settings
from .context import ContextBuilder
from .decisions import DecisionService
from .memo import SlotMemo
from .metrics import Metrics
from .world import KINDS, World, WorldHolder

PLACEMENT_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


class PlacementError(ValueError):
    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


def split_placements(raw: str) -> list[str]:
    return [p.strip() for p in raw.split(",") if p.strip()]


class AppState:
    def __init__(self, settings: Settings, secrets: Secrets) -> None:
        self.settings = settings
        self.secrets = secrets
        self.metrics = Metrics()
        self.holder = WorldHolder(settings.data, secrets.signing_key)
        self.holder.on_swap.append(self._record_swap)
        self.builder = ContextBuilder(settings)
        self.service = DecisionService(self.metrics, settings.time_budget_ms)
        self.started_at = time.time()
        self.edge_memo: SlotMemo[tuple[bytes, Headers, rules.Decision]] = SlotMemo(
            settings.memo_ttl_s, settings.memo_max_entries
        )
        self.fragment_memo: SlotMemo[tuple[bytes, Headers, bytes, rules.Decision]] = SlotMemo(
            settings.memo_ttl_s, settings.memo_max_entries
        )
        self.fragment_cache_control = b"private, max-age=%d" % settings.fragment_max_age_s
        self.decide_memo: SlotMemo[tuple[bytes, rules.Decision]] = SlotMemo(
            settings.memo_ttl_s, settings.memo_max_entries
        )
        self._token = secrets.admin_token.encode() if secrets.admin_token else None

    def _record_swap(self, world: World) -> None:
        metrics = self.metrics
        metrics.snapshot_swaps.inc()
        metrics.snapshot_version.values.clear()
        for kind, version in world.versions.items():
            metrics.snapshot_version.set((kind, version), 1)
            metrics.snapshot_loaded.set((kind,), world.loaded_at.get(kind, 0.0))

    def check_placements(self, names: list[str]) -> None:
        limit = self.settings.limits.max_placements
        if not names:
            raise PlacementError("name at least one placement")
        if len(names) > limit:
            raise PlacementError(f"{len(names)} placements asked for; at most {limit} per request")
        for i, name in enumerate(names):
            if not PLACEMENT_NAME.fullmatch(name):
                raise PlacementError(
                    "placement names are 1-128 characters of letters, digits and _ . : -", i
                )

    def authorized(self, headers: Mapping[bytes, bytes]) -> bool:
        """Bearer token, compared in constant time; no configured token means no access."""
        if self._token is None:
            return False
        value = headers.get(b"authorization", b"")
        scheme, _, token = value.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._token)

    def readiness(self) -> tuple[bool, list[str]]:
        world = self.holder.current
        warnings = [f"{kind}: {msg}" for kind, msg in sorted(world.errors.items())]
        if not self.secrets.signing_key:
            warnings.append("no EDGESIDE_SIGNING_KEY: snapshots are accepted unsigned")
        missing = [kind for kind in KINDS if kind not in world.versions]
        warnings.extend(f"{kind}: no snapshot loaded" for kind in missing)
        return not missing, warnings
