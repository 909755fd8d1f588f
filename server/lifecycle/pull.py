"""Pull mode: poll an HTTP(S) URL per kind for a snapshot .tar (`--pull KIND=URL`, EDGESIDE_PULL).

One process of the node pulls: the worker that holds `flock(DATA/.pull.lock)`; the others retry the
lock now and then, so when that worker dies another takes over. Each poll sends `If-None-Match` with
the last ETag (a 304 costs nothing), streams a changed body to staging with a size cap and socket
timeouts, and feeds it to the same pipeline as a push (verify, validate, activate:
server/lifecycle/pipeline.py). Polls are spread by ±20 % jitter, and errors back off exponentially
up to `MAX_BACKOFF_S`. Activated versions stay on disk, so a node restarts and serves even while the
upstream is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import msgspec

import snapshots
from snapshots import store
from snapshots.manifest import DELTA_KIND, KINDS

from ..asgi import content_length
from ..decide.world import World, WorldHolder
from .pipeline import Lifecycle

log = logging.getLogger("edgeside.pull")

MAX_BACKOFF_S = 300.0
LOCK_RETRY_S = 5.0
CHUNK = 1 << 20
# The file, beside a kind's versions, that says what pull mode last did for it.
PULL_STATE = ".pull-state"


class PullStatus(msgspec.Struct):
    """What pull mode last did for a kind (kept on disk beside the versions)."""

    kind: str
    url: str
    etag: str | None = None
    version: str | None = None
    last_ok: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None


_decode_status = msgspec.json.Decoder(PullStatus).decode


def pull_status(data_dir: Path) -> list[PullStatus]:
    """What pull mode last did, for each kind it pulls (the admin listing shows it)."""
    out: list[PullStatus] = []
    for kind in KINDS:
        path = store.versions_dir(data_dir, kind) / PULL_STATE
        try:
            out.append(_decode_status(path.read_bytes()))
        except (FileNotFoundError, msgspec.DecodeError):
            continue
    return out


def redact(url: str) -> str:
    """A URL fit for a log line: no `user:password@`, no query string (a presigned object-storage
    URL carries its signature there)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    query = "?…" if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", "")) + query


class PullSpecError(ValueError):
    pass


def parse_pull(specs: list[str]) -> list[tuple[str, str]]:
    """`KIND=URL` items (also comma/space separated in one string) -> [(kind, url)]."""
    out: list[tuple[str, str]] = []
    for spec in specs:
        for item in spec.replace(",", " ").split():
            kind, sep, url = item.partition("=")
            if not sep or kind not in (*KINDS, DELTA_KIND):
                raise PullSpecError(
                    f"--pull {item!r}: expected KIND=URL with KIND one of {(*KINDS, DELTA_KIND)}"
                )
            if not url.startswith(("http://", "https://")):
                raise PullSpecError(f"--pull {item!r}: the URL must be http:// or https://")
            out.append((kind, url))
    return out


def take_lock(data_dir: Path, name: str) -> int | None:
    """One worker of a node does a node-wide job (pulling, following the fleet): it holds the
    lock file `name` in the data directory (its fd, kept open), or None if another worker does."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / name, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class Puller:
    def __init__(
        self,
        life: Lifecycle,
        holder: WorldHolder,
        sources: list[tuple[str, str]],
        *,
        interval_s: float,
        timeout_s: float,
        max_bytes: int,
    ) -> None:
        self.life = life
        self.holder = holder
        self.sources = sources
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self._lock_fd: int | None = None

    async def run(self) -> None:
        while self._lock_fd is None:
            self._lock_fd = take_lock(self.life.data_dir, ".pull.lock")
            if self._lock_fd is None:
                await asyncio.sleep(LOCK_RETRY_S)
        shown = [(kind, redact(url)) for kind, url in self.sources]
        log.warning("this worker (pid %d) pulls %s", os.getpid(), shown)
        try:
            await asyncio.gather(*(self._follow(kind, url) for kind, url in self.sources))
        finally:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def _follow(self, kind: str, url: str) -> None:
        failures = 0
        while True:
            try:
                world = self.holder.acquire()
                try:
                    outcome = await asyncio.to_thread(self.poll_once, kind, url, world)
                finally:
                    self.holder.release(world)
                if outcome == "activated":
                    self.holder.nudge()
                failures = 0
                delay = self.interval_s
            except Exception as exc:  # every failure is reported and retried; none stops pulling
                failures += 1
                delay = min(MAX_BACKOFF_S, self.interval_s * 2**failures)
                log.warning(
                    "pull %s from %s failed (%d in a row): %s", kind, redact(url), failures, exc
                )
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))

    # -- one poll (blocking; runs in a thread) -----------------------------------------------------

    def _state_path(self, kind: str) -> Path:
        store_kind = "profiles" if kind == DELTA_KIND else kind
        return store.versions_dir(self.life.data_dir, store_kind) / PULL_STATE

    def _load(self, kind: str, url: str) -> PullStatus:
        try:
            st = _decode_status(self._state_path(kind).read_bytes())
        except (FileNotFoundError, msgspec.DecodeError):
            return PullStatus(kind=kind, url=url)
        return st if st.url == url else PullStatus(kind=kind, url=url)

    def _save(self, st: PullStatus) -> None:
        path = self._state_path(st.kind)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
        tmp.write_bytes(msgspec.json.encode(st))
        os.replace(tmp, path)

    def poll_once(self, kind: str, url: str, world: World) -> str:
        """Fetch and, if changed, ingest. Returns "unchanged", "activated" or "refused"."""
        st = self._load(kind, url)
        try:
            outcome = self._poll(kind, url, st, world)
        except Exception as exc:
            st.last_error = str(exc) or type(exc).__name__
            st.last_error_at = time.time()
            self._save(st)
            raise
        self._save(st)
        return outcome

    def _poll(self, kind: str, url: str, st: PullStatus, world: World) -> str:
        req = urllib.request.Request(url, headers={"User-Agent": "edgeside-pull"})  # noqa: S310
        if st.etag:
            req.add_header("If-None-Match", st.etag)
        deadline = time.monotonic() + self.timeout_s * 10
        try:
            resp = urllib.request.urlopen(req, timeout=self.timeout_s)  # noqa: S310
        except urllib.error.HTTPError as exc:
            if exc.code == 304:
                st.last_ok = time.time()
                return "unchanged"
            raise OSError(f"upstream answered {exc.code} {exc.reason}") from None
        etag = resp.headers.get("etag")

        def fetch(tar_path: Path) -> int:
            size = 0
            with open(tar_path, "xb") as f:
                # read1, not read: read(n) waits for all n bytes, so a body dripping a byte per
                # socket timeout would never reach the deadline check below.
                while chunk := resp.read1(CHUNK):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise OSError(f"upstream body exceeds {self.max_bytes} bytes")
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"download slower than {self.timeout_s * 10:.0f}s")
                    f.write(chunk)
            declared = content_length(resp.headers.get("content-length"))
            if declared is not None and declared != size:
                raise OSError(f"truncated download: {size} of {declared} bytes")
            return size

        with resp:
            try:
                result = self.life.take(kind, fetch, world, source="pull")
            except snapshots.SnapshotError as exc:
                # Refused for good: remember the ETag so the same bad body is not fetched
                # again, and say why in the status listing.
                st.etag = etag
                st.last_error = f"refused: {exc}"
                st.last_error_at = time.time()
                log.error("pulled %s from %s refused: %s", kind, redact(url), exc)
                return "refused"
        st.etag = etag
        st.version = result.version
        st.last_ok = time.time()
        st.last_error = None
        log.warning("pulled %s %s from %s", result.kind, result.version, redact(url))
        return "activated"


async def cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
