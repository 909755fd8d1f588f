"""The set of snapshots a worker decides with, and how it follows newly activated versions.

A `World` does not change once built: one profiles reader, one content reader, one compiled rules
engine, and the versions they came from (only its count of requests holding it, its retirement and
which readers it closes move). A newly activated version makes a new world (`WorldHolder.prepare`).
A request takes the current world once and uses only it, so every request sees one consistent set of
versions from start to end (SPEC §7). Decisions are computed without an `await` between taking the
world and the last read from it, and a retired world is closed only when no request holds it any
more.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import rules
import snapshots
from snapshots import store

from ..asgi import header_value

log = logging.getLogger("edgeside.world")

KINDS = ("profiles", "content", "rules")

# What `WorldHolder.pointers` sees of one kind's active pointer: its link's identity and change
# time, and the identity of what it leads to (None where there is none).
Pointer = tuple[tuple[int, int, int] | None, tuple[int, int] | None]


def prefetch(version: Path) -> threading.Thread | None:
    """Read a newly opened snapshot's LMDB file once, in a background thread, so that its pages
    are in the page cache before requests touch them; the thread, or None if not started.

    The readers map the file with readahead off (random access), so on a cold page cache every
    first touch of a page is a major fault that the event loop waits out, one page read at a
    time. Measured (issue 15 item 4): on a store idle for a while (this machine's reclaim pages
    out file pages unused for about a minute) a realistic bench run took 700-880 major faults in
    10 s — 7 500 counted by perf in another, every one in the profiles' data.mdb — and the server
    ran 1.4-2.5 s of the 10, the rest waiting for reads: 400-900 rps, 600 ms stalls, timeouts.
    `POSIX_FADV_WILLNEED` reads only the device's readahead window here (8 MB of 129), so the
    file is read through (129 MB: 0.33 s), off the loop and off the swap's path: the new world
    serves at once, faulting only until the read gets there. Only when the file fits easily in
    the memory available (half of it): a snapshot larger than memory is left to the faults rather
    than pushing everything else out of the cache."""
    data = version / "data.mdb"
    try:
        size = data.stat().st_size
    except OSError:
        return None
    if size > _available_bytes() // 2:
        return None
    thread = threading.Thread(
        target=_read_through, args=(data,), name="edgeside-prefetch", daemon=True
    )
    thread.start()
    return thread


def _read_through(path: Path) -> None:
    """Read `path` from start to end into one reused buffer (each read releases the GIL)."""
    buffer = bytearray(1 << 20)
    try:
        with path.open("rb", buffering=0) as file:
            while file.readinto(buffer):
                pass
    except OSError as exc:  # a version removed meanwhile: nothing to warm
        log.debug("prefetching %s stopped: %s", path, exc)


def _available_bytes() -> int:
    """MemAvailable from /proc/meminfo (0 where there is none: then nothing is prefetched)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


@dataclass(eq=False)
class World:
    profiles: snapshots.ProfileReader | None = None
    content: snapshots.ContentReader | None = None
    engine: rules.Engine | None = None
    versions: dict[str, str] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    loaded_at: dict[str, float] = field(default_factory=dict)
    # When each active snapshot was built (its manifest's created_at): the age operators watch.
    created_at: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    # The readers this world closes when it retires; a reader carried into the next world moves.
    owned: list[snapshots.ProfileReader | snapshots.ContentReader] = field(default_factory=list)
    # Precomputed so the hot path only copies bytes.
    snapshot_header: bytes = b""
    snapshot_label: str = ""  # the same, as text: what decision-log records carry
    users: int = 0
    retired: bool = False

    def __post_init__(self) -> None:
        # Versions come from manifests (untrusted, checked by snapshots/manifest.py): these bytes
        # still pass the one header-value check, like every byte of a response header.
        self.snapshot_header = header_value(
            ";".join(f"{kind}={self.versions[kind]}" for kind in KINDS if kind in self.versions)
        )
        self.snapshot_label = self.snapshot_header.decode("ascii", "replace")

    def close(self) -> None:
        for reader in self.owned:
            reader.close()
        self.owned = []


def open_rules(path: Path, signing_key: bytes | None) -> tuple[rules.Engine, snapshots.Manifest]:
    manifest, files = snapshots.read_blob_snapshot(path, signing_key=signing_key)
    if not files:
        raise snapshots.SnapshotError(f"{path}: rules snapshot holds no rules file")
    name, data = sorted(files.items())[0]
    ruleset, diagnostics = rules.load(data.decode("utf-8"), filename=name)
    errors = [d for d in diagnostics if d.severity == "error"]
    if ruleset is None or errors:
        first = errors[0] if errors else None
        where = f"{first.file}:{first.line}:{first.col}: {first.message}" if first else "invalid"
        raise snapshots.SnapshotError(f"{path}: rules do not check: {where}")
    return rules.compile_ruleset(ruleset), manifest


class WorldHolder:
    """Owns the current world of one worker process and swaps it when an active pointer moves."""

    def __init__(self, data_dir: str, signing_key: str = "") -> None:
        self.data_dir = Path(data_dir)
        self.signing_key = signing_key.encode() if signing_key else None
        self.current = World()
        self.swaps = 0
        self._seen: dict[str, str] = {}
        self.on_swap: list[Callable[[World], None]] = []
        # Rules engines this process already compiled for a version about to become active (the
        # lifecycle's smoke validation compiled and tried them): `prepare` takes one instead of
        # compiling the same rules a second time. One per path, kept until used or replaced.
        self._compiled: dict[str, tuple[rules.Engine, snapshots.Manifest]] = {}
        self._compiled_lock = threading.Lock()
        self._nudged = asyncio.Event()
        # For `moved`: each kind's `active` link and where it leads, as last looked at.
        self._links = [str(self.data_dir / kind / "active") for kind in KINDS]
        self._pointers: list[Pointer] | None = None

    def adopt(self, path: Path, engine: rules.Engine, manifest: snapshots.Manifest) -> None:
        """Offer the engine compiled (and validated) from the rules version installed at `path`;
        thread-safe. Only the newest offer is kept: a version is activated after it is offered."""
        with self._compiled_lock:
            self._compiled = {str(path.resolve()): (engine, manifest)}

    def _take_compiled(self, path: str) -> tuple[rules.Engine, snapshots.Manifest] | None:
        with self._compiled_lock:
            return self._compiled.pop(path, None)

    def nudge(self) -> None:
        """Look for a new activation now instead of at the next interval (call on the loop)."""
        self._nudged.set()

    async def wait(self, interval_s: float) -> bool:
        """Sleep until the next look: `interval_s`, or sooner when `nudge()` is called; whether
        it was nudged."""
        nudged = True
        try:
            async with asyncio.timeout(interval_s):
                await self._nudged.wait()
        except TimeoutError:
            nudged = False
        self._nudged.clear()
        return nudged

    def pointers(self) -> list[Pointer]:
        """Each kind's active pointer as the file system shows it now: the link's (device, inode,
        change time) — an activation replaces the link (snapshots/store.py `_swap_active`), a new
        inode — and the (device, inode) of the directory it leads to, through every symlink of
        the path (a version removed, or the data directory pointed elsewhere). Two stat calls
        per kind, a few µs: cheap enough to look on the event loop."""
        found: list[Pointer] = []
        for link in self._links:
            try:
                st = os.lstat(link)
                own: tuple[int, int, int] | None = (st.st_dev, st.st_ino, st.st_ctime_ns)
            except OSError:
                own = None
            try:
                st = os.stat(link)
                target: tuple[int, int] | None = (st.st_dev, st.st_ino)
            except OSError:
                target = None
            found.append((own, target))
        return found

    def moved(self) -> bool:
        """Whether any active pointer changed since the last call (True at the first call).

        Looking for a new activation (`prepare`) resolves paths and reads links: pathlib code
        between a dozen system calls, each of which gives the GIL away and takes it back. Run in
        a thread every `reload_interval_s`, that was a dozen GIL hand-overs with the event loop
        four times a second, each one a wait of the loop for a thread that may not be on a core
        (issue 15 item 4). This look takes no thread: `prepare` runs only when it says so."""
        now = self.pointers()
        if now == self._pointers:
            return False
        self._pointers = now
        return True

    def forget_pointers(self) -> None:
        """Make the next `moved` say True (after a look that failed: look again next time)."""
        self._pointers = None

    def acquire(self) -> World:
        world = self.current
        world.users += 1
        return world

    def release(self, world: World) -> None:
        world.users -= 1
        if world.retired and world.users == 0:
            world.close()

    def _active_paths(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for kind in KINDS:
            path = store.active_path(self.data_dir, kind)
            if path is not None:
                found[kind] = str(path.resolve())
        return found

    def refresh(self) -> bool:
        """Load and switch to whatever was activated since the last call (startup, tests)."""
        new = self.prepare()
        if new is None:
            return False
        self.commit(new)
        return True

    def prepare(self) -> World | None:
        """Open whatever was activated since the last call, without touching the current world.

        Safe to run in a thread: opening readers and compiling rules can take milliseconds, and
        the event loop keeps serving meanwhile. A kind that fails to open keeps its previous
        version (the error is reported by `/readyz`), so a bad activation never takes a node down.
        """
        paths = self._active_paths()
        if paths == self._seen:
            return None
        self._seen = paths
        old = self.current
        profiles, content, engine = old.profiles, old.content, old.engine
        versions, kept = dict(old.versions), dict(old.paths)
        loaded_at, created_at = dict(old.loaded_at), dict(old.created_at)
        errors = dict(old.errors)
        owned: list[snapshots.ProfileReader | snapshots.ContentReader] = []
        for kind, path in paths.items():
            if old.paths.get(kind) == path:
                continue
            key = self.signing_key
            try:
                if kind == "profiles":
                    profiles = snapshots.open_profiles(Path(path), signing_key=key, verify=False)
                    owned.append(profiles)
                    manifest = profiles.manifest
                    prefetch(Path(path))
                elif kind == "content":
                    content = snapshots.open_content(Path(path), signing_key=key, verify=False)
                    owned.append(content)
                    manifest = content.manifest
                    prefetch(Path(path))
                else:
                    # Compiled by this process's validation of this very version, or compiled now.
                    engine, manifest = self._take_compiled(path) or open_rules(Path(path), key)
            except (snapshots.SnapshotError, OSError, UnicodeDecodeError) as exc:
                errors[kind] = str(exc)
                log.error("cannot load %s snapshot %s: %s", kind, path, exc)
                continue
            errors.pop(kind, None)
            versions[kind] = manifest.version
            kept[kind] = path
            loaded_at[kind] = time.time()
            created_at[kind] = manifest.created_at
        if versions == old.versions and errors == old.errors:
            for reader in owned:
                reader.close()
            return None
        return World(
            profiles=profiles,
            content=content,
            engine=engine,
            versions=versions,
            paths=kept,
            loaded_at=loaded_at,
            created_at=created_at,
            errors=errors,
            owned=owned,
        )

    def commit(self, new: World) -> None:
        """Make `new` current (on the event loop thread) and retire the old world."""
        old = self.current
        carried = [r for r in old.owned if r is new.profiles or r is new.content]
        new.owned.extend(carried)
        old.owned = [r for r in old.owned if r not in carried]
        self.current = new
        self.swaps += 1
        old.retired = True
        if old.users == 0:
            old.close()
        for callback in self.on_swap:
            callback(new)
