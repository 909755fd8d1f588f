"""Bandit windows and webhook claims, agreed by the whole fleet through JetStream key-value buckets.

- **Trigger claims** (`edgeside_claims`, entries live `live.trigger_window_s`): after the node's own
  claim (one worker of the node wins, server/live/triggers.py) the fleet's: `create` of the key
  for (action, visitor) succeeds on exactly one node per window. With the broker unreachable a node
  decides alone (fail open: a webhook may then fire once per node, counted as `local_only`).
- **Bandit windows** (`edgeside_arms`): arm counts reach every node with the events that carry them
  (the live stream), but each node froze them for a window at its own moment, so weights could
  differ by what had arrived. The leader worker agrees the counts of the *next* window before it
  starts: the first node to `create` the window's key sets them, the others read them, and each
  node freezes them in its store (first writer wins there too). Every node then computes the same
  weights. A node that joins mid-window takes the current window's agreed counts if it has not
  frozen its own yet.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import time
from typing import TYPE_CHECKING

import msgspec

from .link import BrokerLink

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

    from ..live.store import LiveStore

log = logging.getLogger("edgeside.fleet")

ARMS_BYTES = 64 * 1024
MAX_ARMS = 1000
_encode = msgspec.msgpack.Encoder().encode
_decode_counts = msgspec.msgpack.Decoder(dict[str, tuple[int, int]]).decode


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:40]


def decode_counts(raw: bytes) -> dict[str, tuple[int, int]] | None:
    """Agreed arm counts from the broker, or None when they are not what they should be."""
    if len(raw) > ARMS_BYTES:
        return None
    try:
        counts = _decode_counts(raw)
    except msgspec.DecodeError:
        return None
    if len(counts) > MAX_ARMS:
        return None
    for arm, (successes, trials) in counts.items():
        if not (0 < len(arm) <= 256 and arm.isprintable()) or successes < 0 or trials < 0:
            return None
    return counts


class SharedState:
    def __init__(self, link: BrokerLink, bandit_window_s: float, trigger_window_s: float) -> None:
        self.link = link
        self.bandit_window_s = bandit_window_s
        self.trigger_window_s = trigger_window_s
        self.counts: collections.Counter[str] = collections.Counter()
        self._buckets: dict[str, KeyValue] = {}
        self._agreed: set[tuple[str, int]] = set()

    async def _bucket(self, name: str, ttl: float) -> KeyValue:
        found = self._buckets.get(name)
        if found is not None:
            return found
        from nats.js.api import KeyValueConfig
        from nats.js.errors import BucketNotFoundError

        js = self.link.js
        if js is None:
            raise ConnectionError("not connected")
        full = f"{self.link.settings.subject}_{name}".replace(".", "_")
        try:
            kv = await js.key_value(full)
        except BucketNotFoundError:
            kv = await js.create_key_value(KeyValueConfig(bucket=full, history=1, ttl=ttl))
        self._buckets[name] = kv
        return kv

    # -- trigger claims ---------------------------------------------------------------------------

    async def claim(self, action: str, key: str, window_s: float) -> bool:
        """True when this node is the first of the fleet to claim (action, visitor) this window."""
        from nats.js.errors import KeyWrongLastSequenceError

        if not self.link.up:
            self.counts["local_only"] += 1
            return True
        try:
            kv = await self._bucket("claims", window_s)
            await asyncio.wait_for(kv.create("c." + _digest(action, key), b"1"), timeout=2.0)
        except KeyWrongLastSequenceError:
            self.counts["claimed_elsewhere"] += 1
            return False
        except Exception as exc:  # broker trouble: decide alone rather than never fire
            self._buckets.pop("claims", None)
            log.info("fleet: claim for %s not shared: %s", action, exc)
            self.counts["local_only"] += 1
            return True
        self.counts["claimed"] += 1
        return True

    # -- bandit windows ---------------------------------------------------------------------------

    async def agree_forever(self, store: LiveStore) -> None:
        window_s = self.bandit_window_s
        if window_s <= 0:
            return
        while True:
            await self.link.wait_up()
            try:
                await self.agree(store, time.time())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # next round; nodes freeze their own counts meanwhile
                self._buckets.pop("arms", None)
                log.info("fleet: bandit windows not agreed: %s", exc)
            await asyncio.sleep(min(window_s / 4, 5.0))

    async def agree(self, store: LiveStore, now: float) -> None:
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        window_s = self.bandit_window_s
        current = int(now // window_s)
        kv = await self._bucket("arms", max(3 * window_s, 60.0))
        for experiment in await asyncio.to_thread(store.experiments):
            for window in (current, current + 1):
                if (experiment, window) in self._agreed:
                    continue
                key = f"a.{_digest(experiment)}.{window}"
                counts: dict[str, tuple[int, int]] | None = None
                if window > current:
                    mine = await asyncio.to_thread(store.arm_counts, experiment)
                    try:
                        await kv.create(key, _encode(mine))
                        counts = mine
                    except KeyWrongLastSequenceError:
                        pass  # another node set them first: read theirs below
                if counts is None:
                    try:
                        entry = await kv.get(key)
                    except KeyNotFoundError:
                        continue  # the current window was never agreed: nodes froze their own
                    counts = decode_counts(entry.value or b"")
                    if counts is None:
                        self.counts["malformed"] += 1
                        continue
                await asyncio.to_thread(store.freeze, experiment, window, counts)
                self._agreed.add((experiment, window))
        self._agreed = {(e, w) for e, w in self._agreed if w >= current}
