"""Snapshots from object storage: fetch on announcement, poll the pointer as a safety net.

The node's leader worker (server/fleet/node.py) subscribes to `<subject>.snapshots` and polls each
kind's pointer (`<prefix>/<kind>/latest.json`) every `poll_interval_s` (±20 %) with `If-None-Match`.
An announcement is only a hint that makes the node look: after a random delay of up to
`announce_jitter_s` (so a fleet does not fetch in one burst), it downloads the announced archive
under its kind's lock, checks size and sha256 against the announcement, and hands it to
`Lifecycle.ingest` — the very pipeline of a push: unpack, hashes, signature, smoke validation,
atomic activation. A forged announcement can make a node fetch, never activate: an archive whose
signature fails is refused there (and its sha256 remembered, so it is not fetched again). Object
storage down or an archive that does not arrive whole: nothing changes, the active version stays,
the next announcement or poll tries again.

A small archive also comes in the announcement itself (`<subject>.snapshots.inline`, published just
before the plain one): a node with a signing key takes it from there at once — no jitter, no S3
request — through the same checks and the same `Lifecycle` pipeline, and ignores the plain
announcement of the same archive. A node without a signing key does not listen there: unsigned,
only the bucket's write permissions vouch for an archive, so it keeps fetching from the bucket. An
inline archive that cannot be taken for any reason but a refusal is fetched from the bucket.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import snapshots
from snapshots import objstore, store

from ..config import FleetSettings
from .link import BrokerLink
from .messages import KINDS, Malformed, Pointer, decode_inline, decode_pointer

if TYPE_CHECKING:
    from nats.aio.msg import Msg

    from ..decide.world import World, WorldHolder
    from ..lifecycle.pipeline import Lifecycle

log = logging.getLogger("edgeside.fleet")

MAX_BACKOFF_S = 300.0
MAX_REFUSED = 1000
MAX_INLINE_SEEN = 64

Count = Callable[[str, float], None]


class SnapshotFollower:
    def __init__(
        self,
        settings: FleetSettings,
        link: BrokerLink | None,
        life: Lifecycle,
        holder: WorldHolder,
        count: Count,
        *,
        max_bytes: int,
        timeout_s: float,
        count_s3: Callable[[str], None] = lambda request: None,
    ) -> None:
        self.settings = settings
        self.link = link
        self.life = life
        self.holder = holder
        self.count = count
        self.count_s3 = count_s3  # each S3 request: "pointer" or "archive"
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.bucket, self.prefix = objstore.parse_url(settings.snapshots_from)
        self.etags: dict[str, str | None] = {}
        self.refused: set[str] = set()  # sha256 of archives refused for good
        # Pointers heard inline: the plain announcement of the very same pointer is not acted on
        # (in order of arrival, bounded). The whole pointer, not its sha256: an inline message
        # naming a real sha256 with another key cannot make the node skip the real announcement.
        self.inline_seen: dict[Pointer, None] = {}
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self._s3: Any = None
        self._lock = asyncio.Lock()  # one download at a time per node
        self._pending: set[asyncio.Task[None]] = set()

    def note(self) -> str | None:
        if self.last_error_at is None:
            return None
        return f"fleet: snapshots from {self.settings.snapshots_from}: {self.last_error}"

    async def run(self) -> None:
        await asyncio.gather(self._poll_forever(), self._listen())

    # -- the two triggers -------------------------------------------------------------------------

    async def _poll_forever(self) -> None:
        failures = 0
        while True:
            try:
                for kind in KINDS:
                    await self.sync(kind, None)
                failures = 0
                delay = self.settings.poll_interval_s
            except Exception as exc:  # storage down: keep serving, try again later
                failures += 1
                delay = min(MAX_BACKOFF_S, self.settings.poll_interval_s * 2**failures)
                log.warning("fleet: polling %s failed: %s", self.settings.snapshots_from, exc)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))

    async def _listen(self) -> None:
        link = self.link
        if link is None:
            return
        await link.wait_up()
        nc = link.nc
        if nc is None:
            return

        async def heard(msg: Msg) -> None:
            try:
                pointer = decode_pointer(msg.data, self.settings.max_message_bytes)
            except Malformed as exc:
                self.count("malformed", 1)
                log.warning("fleet: announcement dropped: %s", str(exc)[:200])
                return
            if pointer in self.inline_seen:
                return  # taken (or being taken) from its inline announcement
            self._spawn(self._announced(pointer, None))

        async def heard_inline(msg: Msg) -> None:
            try:
                inline = decode_inline(msg.data, self.settings.max_message_bytes)
            except Malformed as exc:
                self.count("malformed", 1)
                log.warning("fleet: inline announcement dropped: %s", str(exc)[:200])
                return
            seen = self.inline_seen
            seen[inline.pointer] = None
            while len(seen) > MAX_INLINE_SEEN:
                del seen[next(iter(seen))]
            self._spawn(self._announced(inline.pointer, inline.archive))

        # nats-py renews the subscriptions after every reconnect by itself.
        subject = f"{self.settings.subject}.snapshots"
        await nc.subscribe(subject, cb=heard)
        if self.life.signing_key is not None:  # unsigned: only the bucket vouches for an archive
            await nc.subscribe(f"{subject}.inline", cb=heard_inline)
        await asyncio.Event().wait()

    def _spawn(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(job)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _announced(self, pointer: Pointer, archive: bytes | None) -> None:
        if self.holder.current.versions.get(pointer.kind) == pointer.version:
            self.count("unchanged", 1)
            return
        heard = time.monotonic()
        jitter = 0.0
        outcome: str | None = None
        if archive is not None:
            try:
                outcome = await self.sync(pointer.kind, pointer, archive)
            except snapshots.SnapshotError as exc:
                if not isinstance(exc, store.StoreBusy):  # refused: never from the bucket either
                    log.warning(
                        "fleet: inline %s %s refused: %s", pointer.kind, pointer.version, exc
                    )
                    return
            except Exception as exc:  # counted and noted in sync; the bucket may do better
                log.warning("fleet: inline %s %s not taken: %s", pointer.kind, pointer.version, exc)
        if outcome is None:
            jitter = random.uniform(0.0, self.settings.announce_jitter_s)
            await asyncio.sleep(jitter)
            try:
                outcome = await self.sync(pointer.kind, pointer)
            except Exception as exc:  # counted and noted in sync; the poll is the safety net
                log.warning(
                    "fleet: announced %s %s not taken: %s", pointer.kind, pointer.version, exc
                )
                return
        if outcome == "activated":  # where a fleet's convergence time goes, node by node
            log.warning(
                "fleet: %s %s activated %.0f ms after its announcement (%s)",
                pointer.kind,
                pointer.version,
                (time.monotonic() - heard) * 1000,
                f"jitter {jitter * 1000:.0f} ms" if archive is None else "inline",
            )

    # -- one look at one kind ---------------------------------------------------------------------

    async def sync(self, kind: str, hint: Pointer | None, archive: bytes | None = None) -> str:
        """Look at one kind: the pointer polled (`hint` None), or the announced `hint` (with its
        `archive` when it came inline); fetch, verify and activate what is new."""
        async with self._lock:
            world = self.holder.acquire()
            try:
                outcome = await asyncio.to_thread(self._sync, kind, hint, world, archive)
            except snapshots.SnapshotError as exc:
                self._failed(f"refused: {exc}")
                self.count("refused", 1)
                raise
            except Exception as exc:
                self._failed(str(exc) or type(exc).__name__)
                self.count("failed", 1)
                raise
            finally:
                self.holder.release(world)
        if outcome == "activated":
            self.last_error = self.last_error_at = None
            self.holder.nudge()  # serve it now (with the engine validation compiled)
        self.count(outcome, 1)
        return outcome

    def _failed(self, why: str) -> None:
        self.last_error = why[:500]
        self.last_error_at = time.time()

    def _client(self) -> Any:
        if self._s3 is None:
            s = self.settings
            self._s3 = objstore.client(s.s3_endpoint, s.s3_region, self.timeout_s)
        return self._s3

    def _sync(
        self, kind: str, hint: Pointer | None, world: World, archive: bytes | None = None
    ) -> str:
        etag: str | None = None
        if hint is None:
            s3 = self._client()
            self.count_s3("pointer")
            raw, etag = objstore.read_pointer(
                s3, self.bucket, self.prefix, kind, self.etags.get(kind)
            )
            if raw is None:
                self.etags[kind] = etag
                return "unchanged"
            try:
                pointer = decode_pointer(raw, objstore.POINTER_MAX_BYTES)
            except Malformed as exc:
                raise objstore.ObjectStoreError(f"the {kind} pointer: {exc}") from None
        else:
            pointer = hint
        if pointer.kind != kind:
            raise objstore.ObjectStoreError(f"the {kind} pointer names a {pointer.kind} snapshot")
        if not pointer.key.startswith(f"{self.prefix}/" if self.prefix else ""):
            raise snapshots.SnapshotError(f"{pointer.key!r} is outside {self.prefix!r}")
        data = self.life.data_dir
        if pointer.sha256 in self.refused:
            outcome = "refused"
        elif store.active_version(data, kind) == pointer.version:
            outcome = "unchanged"
        else:
            outcome = self._fetch(kind, pointer, world, archive)
        if hint is None:
            self.etags[kind] = etag  # this pointer is dealt with: a 304 until it changes
        return outcome

    def _fetch(self, kind: str, pointer: Pointer, world: World, archive: bytes | None) -> str:
        def fetch(tar: Path) -> int:
            if archive is not None:
                return objstore.save(
                    archive, tar, size=pointer.size, sha256=pointer.sha256, max_bytes=self.max_bytes
                )
            self.count_s3("archive")
            return objstore.download(
                self._client(),
                self.bucket,
                pointer.key,
                tar,
                size=pointer.size,
                sha256=pointer.sha256,
                max_bytes=self.max_bytes,
                deadline_s=self.timeout_s * 10,
            )

        try:
            result = self.life.take(kind, fetch, world, source="fleet")
        except store.StoreBusy:
            raise
        except snapshots.SnapshotError:
            if len(self.refused) >= MAX_REFUSED:
                self.refused.clear()
            self.refused.add(pointer.sha256)
            raise
        log.warning(
            "fleet: %s %s from %s: %s (%s)",
            kind,
            pointer.version,
            pointer.key,
            result.message,
            result.timings_ms,
        )
        return "activated" if result.activated else "unchanged"
