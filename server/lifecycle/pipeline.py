"""How a snapshot is activated (SPEC §7): everything between a received .tar and an active version.

`Lifecycle.ingest` is the pipeline of a push — unpack, hash, signature, open, smoke validation,
install, activate — run in a thread so the event loop keeps serving decisions meanwhile. The admin
API (server/lifecycle/admin.py) and pull mode (server/lifecycle/pull.py) both feed it. Whichever
worker runs it moves the kind's `active` symlink; the others notice within `reload_interval_s`
(server/decide/world.py). Rules are compiled once per activation in the worker that runs it: the
engine the smoke validation compiled and tried is handed to that worker's `WorldHolder` (`adopt`),
which serves with it instead of compiling the same rules again.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec

import rules
import snapshots
from snapshots import archive, delta, store
from snapshots.manifest import DELTA_KIND, KINDS, Manifest, read_manifest
from snapshots.scan import scan
from snapshots.verify import check_snapshot

from ..decide.world import World, WorldHolder, open_rules

PUSH_KINDS = (*KINDS, DELTA_KIND)
SAMPLE_PROFILES = 20
SAMPLE_SITES = 8


class Refusal(Exception):
    """A push or command refused: HTTP status, stable code, a message that says what to do."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


class ValidationFailed(snapshots.SnapshotError):
    """The snapshot is sound on disk but fails the smoke validation (empty, unreadable records,
    rules that do not compile, a sample decision that errors)."""


# What opening and deciding with a bad (but correctly signed and hashed) snapshot can raise.
_INVALID = (snapshots.SnapshotError, msgspec.MsgspecError, UnicodeDecodeError, ValueError)


# A full disk (or quota) is the node's problem, not the upload's: 507, so the pusher retries later
# instead of rebuilding a snapshot it was told is corrupt.
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def no_space(exc: OSError) -> Refusal:
    return Refusal(
        507,
        "insufficient_storage",
        f"no space left in the data directory ({exc.strerror}); the push was dropped and nothing "
        "changed — free space (or lower EDGESIDE_KEEP_VERSIONS) and push again",
    )


# A kind's lock held for a moment (a worker's start-up sweep, a rollback) is waited out this long
# before a push, activation or rollback is refused 409 `store_busy`; a push in progress holds it
# for much longer and is still refused. Short: the admin route waits on the event loop, politely.
LOCK_WAIT_S = 0.5
LOCK_POLL_S = 0.01


@contextlib.contextmanager
def locked_within(
    data_dir: str | os.PathLike[str], kind: str, wait_s: float = LOCK_WAIT_S
) -> Iterator[None]:
    """`store.locked`, waiting up to `wait_s` for a holder to finish (blocking: call in a
    thread; the admin routes use `hold_within`)."""
    deadline = time.monotonic() + wait_s
    with contextlib.ExitStack() as stack:
        while True:
            try:
                stack.enter_context(store.locked(data_dir, kind))
                break
            except store.StoreBusy:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(LOCK_POLL_S)
        yield


async def hold_within(
    stack: contextlib.ExitStack, data_dir: str | os.PathLike[str], kind: str
) -> None:
    """Enter the kind's lock into `stack`, waiting up to `LOCK_WAIT_S` without blocking the
    event loop; `store.StoreBusy` if it stays held."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            stack.enter_context(store.locked(data_dir, kind))
            return
        except store.StoreBusy:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(LOCK_POLL_S)


def _leftovers(data_dir: Path, kind: str) -> bool:
    """Anything `store.clean_staging` would remove (looked at without the lock)."""
    try:
        if store.list_staging(data_dir, kind):
            return True
        vdir = store.versions_dir(data_dir, kind)
        return vdir.is_dir() and any(
            p.name.startswith(".") and ".tmp-" in p.name for p in vdir.iterdir()
        )
    except OSError:
        return True  # cannot tell: sweep under the lock as before


# -- what the pipeline answers ------------------------------------------------------------------


class PushResult(msgspec.Struct):
    kind: str
    version: str
    previous: str | None
    activated: bool
    signature: str  # "verified" | "not checked: no EDGESIDE_SIGNING_KEY on this node"
    bytes: int
    counts: dict[str, int]
    decisions_checked: int
    timings_ms: dict[str, float]
    message: str
    base: str | None = None  # for a delta: the profiles version it was applied to


class VersionInfo(msgspec.Struct):
    version: str
    state: str  # active | kept | staging
    age_s: float | None
    size_bytes: int
    counts: dict[str, int]


class KindStatus(msgspec.Struct):
    kind: str
    active: str | None
    versions: list[VersionInfo]


class SwitchResult(msgspec.Struct):
    kind: str
    version: str
    previous: str | None
    message: str


# -- the pipeline --------------------------------------------------------------------------------


class Lifecycle:
    """The node's side of a push: everything between a received .tar and an active version."""

    def __init__(
        self,
        data_dir: str,
        signing_key: bytes | None,
        keep: int,
        holder: WorldHolder | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.signing_key = signing_key
        self.keep = max(1, keep)
        # This worker's holder: it gets the rules engine validation compiled (one compile per
        # activation, not two).
        self.holder = holder

    @property
    def signature_note(self) -> str:
        if self.signing_key is None:
            return "not checked: no EDGESIDE_SIGNING_KEY on this node (unsigned snapshots accepted)"
        return "verified"

    def sweep(self) -> None:
        """Remove leftovers of uploads a crash interrupted; skip kinds being pushed right now.

        A kind is locked only when it has leftovers to remove: every worker sweeps as it starts,
        and a worker starting late (a slow or loaded machine, or one restarted by the supervisor)
        otherwise took each kind's lock while another worker was already serving pushes — a push
        arriving in that instant was refused 409 `store_busy` (the flaky disk-full fault test)."""
        for kind in KINDS:
            if not _leftovers(self.data_dir, kind):
                continue
            try:
                with store.locked(self.data_dir, kind):
                    store.clean_staging(self.data_dir, kind)
            except store.StoreBusy:
                continue

    def take(
        self, push_kind: str, fetch: Callable[[Path], int], world: World, *, source: str
    ) -> PushResult:
        """Fetch an archive into the kind's staging under its lock and `ingest` it: what pull mode
        and the fleet share (call in a thread). `fetch(path)` writes the archive to `path` and
        returns its size, raising if it does not arrive whole; the staging directory (named after
        `source`) is removed whatever happens."""
        kind = "profiles" if push_kind == DELTA_KIND else push_kind
        with locked_within(self.data_dir, kind):
            staging = store.new_staging(self.data_dir, kind, prefix=f"{source}-")
            try:
                tar = staging / "upload.tar"
                t0 = time.perf_counter()
                size = fetch(tar)
                fetch_ms = round((time.perf_counter() - t0) * 1000, 2)
                result = self.ingest(push_kind, tar, size, world)
                result.timings_ms = {"fetch_ms": fetch_ms, **result.timings_ms}
                if "total_ms" in result.timings_ms:
                    result.timings_ms["total_ms"] = round(
                        result.timings_ms["total_ms"] + fetch_ms, 2
                    )
                return result
            finally:
                shutil.rmtree(staging, ignore_errors=True)

    def ingest(self, push_kind: str, tar_path: Path, received: int, world: World) -> PushResult:
        """Unpack, verify, validate, install and activate a received archive (call with the
        kind's lock held, in a thread). Any refusal leaves the active version and store as
        they were; the caller removes `tar_path`."""
        kind = "profiles" if push_kind == DELTA_KIND else push_kind
        timings: dict[str, float] = {}
        t = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal t
            now = time.perf_counter()
            timings[name] = round((now - t) * 1000, 2)
            t = now

        unpacked = tar_path.with_suffix("")
        work: list[Path] = [unpacked]
        try:
            try:
                archive.unpack(tar_path, unpacked)
            except (tarfile.TarError, EOFError, OSError) as exc:
                # A truncated tar surfaces mid-read, after the member headers looked fine.
                shutil.rmtree(unpacked, ignore_errors=True)
                if isinstance(exc, OSError) and exc.errno in NO_SPACE:
                    raise no_space(exc) from None
                raise snapshots.UnsafeArchive(
                    f"the archive is truncated or corrupt: {exc}"
                ) from None
            lap("unpack_ms")
            try:
                manifest = check_snapshot(
                    unpacked, signing_key=self.signing_key, hashes=True, expect_kind=push_kind
                )
            except snapshots.KindMismatch:
                got = read_manifest(unpacked).kind
                raise snapshots.KindMismatch(
                    f"the upload is a {got} snapshot, pushed as {push_kind}; "
                    f"PUT it to /v1/admin/snapshots/{got}"
                ) from None
            lap("verify_ms")
            base: str | None = None
            if push_kind == DELTA_KIND:
                base = delta.delta_base(manifest)
                active = store.active_path(self.data_dir, "profiles")
                if active is None:
                    raise delta.WrongBase(
                        f"delta {manifest.version} applies to profiles {base}, but this node has "
                        "no active profiles version; push a full snapshot first"
                    )
                applied = unpacked.with_name(unpacked.name + "-applied")
                work.append(applied)
                manifest = delta.apply_delta(
                    active, unpacked, applied, signing_key=self.signing_key
                )
                lap("apply_delta_ms")
                unpacked = applied
            if kind != "rules":  # the LMDB kinds: read every page where a crash costs nothing
                try:
                    scan(unpacked)
                except snapshots.SnapshotError as exc:
                    raise ValidationFailed(f"smoke validation failed: {exc}") from None
                lap("scan_ms")
            try:
                checked, engine = self._validate(kind, unpacked, manifest, world)
            except ValidationFailed:
                raise
            except _INVALID as exc:
                raise ValidationFailed(f"smoke validation failed: {exc}") from None
            lap("validate_ms")
            previous = store.active_version(self.data_dir, kind)

            def result(activated: bool, message: str) -> PushResult:
                return PushResult(
                    kind=kind,
                    version=manifest.version,
                    previous=previous,
                    activated=activated,
                    signature=self.signature_note,
                    bytes=received,
                    counts=manifest.counts,
                    decisions_checked=checked,
                    timings_ms=timings,
                    message=f"{kind} {manifest.version} {message}",
                    base=base,
                )

            if previous == manifest.version:
                return result(False, "is already active; nothing changed")
            store.install_staged(self.data_dir, kind, unpacked, manifest.version)
            lap("install_ms")
            self._offer(kind, manifest, engine)  # before the symlink moves: found when it has
            store.activate(self.data_dir, kind, manifest.version, keep=self.keep)
            lap("activate_ms")
            timings["total_ms"] = round(sum(timings.values()), 2)
            return result(True, "is active; workers switch within a second")
        finally:
            for p in work:
                shutil.rmtree(p, ignore_errors=True)

    def validate(self, kind: str, path: Path, manifest: Manifest, world: World) -> int:
        """Open the candidate and run a sample of decisions with it and the other kinds of
        `world` (the worker's current one: LMDB allows one environment per path and process, so
        the active versions are borrowed, not reopened). Returns how many decisions were made;
        raises `SnapshotError` naming what failed."""
        return self._validate(kind, path, manifest, world)[0]

    def _offer(self, kind: str, manifest: Manifest, engine: rules.Engine | None) -> None:
        if kind == "rules" and engine is not None and self.holder is not None:
            path = store.versions_dir(self.data_dir, kind) / manifest.version
            self.holder.adopt(path, engine, manifest)

    def _validate(
        self, kind: str, path: Path, manifest: Manifest, world: World
    ) -> tuple[int, rules.Engine | None]:
        """`validate`, and for rules the engine it compiled (served as is once activated)."""
        opened: snapshots.ProfileReader | snapshots.ContentReader | None = None
        try:
            profiles = world.profiles
            content = world.content
            engine = world.engine
            # A kept version this worker still serves (it has not followed the last activation
            # yet) is already open here, and LMDB refuses a second environment on the same file:
            # borrow the worker's reader then.
            in_use = world.paths.get(kind) == str(path.resolve())
            if kind == "profiles":
                if not in_use or profiles is None:
                    profiles = opened = snapshots.open_profiles(
                        path, signing_key=self.signing_key, verify=False
                    )
                _check_profiles(profiles)
            elif kind == "content":
                if not in_use or content is None:
                    content = opened = snapshots.open_content(
                        path, signing_key=self.signing_key, verify=False
                    )
                _check_content(content)
            else:
                engine, _ = open_rules(path, self.signing_key)
            if engine is None:
                return 0, None
            sample = profiles.sample(SAMPLE_PROFILES) if profiles is not None else []
            checked = _sample_decisions(engine, sample, content)
            return checked, engine if kind == "rules" else None
        finally:
            if opened is not None:
                opened.close()

    def switch(self, kind: str, version: str, world: World) -> SwitchResult:
        """Re-activate a kept version (call with the kind's lock held, in a thread)."""
        path = store.versions_dir(self.data_dir, kind) / version
        if not (path / "manifest.json").is_file():
            kept = ", ".join(store.list_versions(self.data_dir, kind)) or "none"
            raise store.UnknownVersion(f"{kind} {version} is not kept on this node (kept: {kept})")
        # Hashed when installed; here the manifest, sizes and signature are checked again.
        manifest = check_snapshot(
            path, signing_key=self.signing_key, hashes=False, expect_kind=kind
        )
        try:
            _, engine = self._validate(kind, path, manifest, world)
        except _INVALID as exc:
            raise ValidationFailed(f"smoke validation failed: {exc}") from None
        previous = store.active_version(self.data_dir, kind)
        self._offer(kind, manifest, engine)
        store.activate(self.data_dir, kind, version, keep=self.keep)
        return SwitchResult(kind, version, previous, f"{kind} {version} is active")

    def rollback(self, kind: str) -> SwitchResult:
        version, previous = store.rollback(self.data_dir, kind)
        return SwitchResult(kind, version, previous, f"{kind} rolled back to {version}")

    def status(self) -> list[KindStatus]:
        now = time.time()
        out: list[KindStatus] = []
        for kind in KINDS:
            active = store.active_version(self.data_dir, kind)
            infos: list[VersionInfo] = []
            for v in reversed(store.list_versions(self.data_dir, kind)):
                path = store.versions_dir(self.data_dir, kind) / v
                try:
                    created, counts = store.describe(path)
                    size = store.version_size(path)
                except (snapshots.SnapshotError, OSError):
                    continue  # garbage-collected while we looked
                state = "active" if v == active else "kept"
                infos.append(VersionInfo(v, state, round(now - created, 1), size, counts))
            for staged in store.list_staging(self.data_dir, kind):
                try:
                    st = staged.stat()
                    size = st.st_size if staged.is_file() else store.version_size(staged)
                except OSError:
                    continue
                infos.append(
                    VersionInfo(staged.name, "staging", round(now - st.st_mtime, 1), size, {})
                )
            out.append(KindStatus(kind, active, infos))
        return out


def _check_profiles(reader: snapshots.ProfileReader) -> None:
    where = f"profiles {reader.version}"
    if reader.manifest.counts.get("profiles", 0) <= 0:
        raise snapshots.SnapshotError(f"{where}: holds no profiles; refusing to serve an empty set")
    sample = reader.sample(SAMPLE_PROFILES)
    if not sample:
        raise snapshots.SnapshotError(f"{where}: the manifest counts profiles but none can be read")
    for p in sample:
        if reader.get(p.id) != p:
            raise snapshots.SnapshotError(f"{where}: profile {p.id!r} does not read back")
        for id_type in reader.id_priority:
            for value in p.ids.get(id_type, [])[:1]:
                if reader.resolve(id_type, value) is None:
                    raise snapshots.SnapshotError(
                        f"{where}: alias {id_type}:{value} of profile {p.id!r} is missing"
                    )


def _check_content(reader: snapshots.ContentReader) -> None:
    where = f"content {reader.version}"
    if reader.manifest.counts.get("items", 0) <= 0:
        raise snapshots.SnapshotError(
            f"{where}: holds no items; refusing to serve an empty catalogue"
        )
    for cid in reader.all_ids()[:50]:
        if reader.get(cid) is None:
            raise snapshots.SnapshotError(f"{where}: item {cid!r} is indexed but does not read")


# Smoke validation refuses rules whose sample decisions fall back beyond this share of a
# placement's samples (issue 14, defect 7: a rule failing on every request was accepted because
# only `internal_error` refused). A small share is allowed: odd profile data in one sampled
# profile is the fail-open case the engine exists for, not a broken rule.
FALLBACK_REASONS = frozenset({"internal_error", "rule_error", "deadline"})
MAX_FALLBACK_SHARE = 0.05


def _sample_decisions(
    engine: rules.Engine,
    sample: list[snapshots.Profile],
    content: snapshots.ContentReader | None,
) -> int:
    """Decide every placement of a few sites for sampled visitors (and an anonymous one).

    `Engine.decide` fails open, so an exception inside the rules shows as a fallback
    (`internal_error`, `rule_error`, `deadline`): a placement whose sampled decisions fall back
    more often than `MAX_FALLBACK_SHARE` refuses the snapshot, naming the rule that raised.
    """
    now = time.time()
    visitors: list[snapshots.Profile | None] = [None, *sample]
    n = 0
    for site in sorted(engine.ruleset.sites)[:SAMPLE_SITES]:
        placements = engine.placements(site)
        if not placements:
            continue
        ctx = rules.Context(site=site, now=now)
        failed: dict[str, list[tuple[snapshots.Profile | None, str]]] = {}
        for profile in visitors:
            d = engine.decide(
                visitor_id=profile.id if profile else None,
                profile=profile,
                ctx=ctx,
                placements=placements,
                content=content,
            )
            n += 1
            for p in d.placements:
                if p.fallback in FALLBACK_REASONS:
                    failed.setdefault(p.placement, []).append((profile, p.fallback))
        for placement, fails in sorted(failed.items()):
            if len(fails) / len(visitors) <= MAX_FALLBACK_SHARE:
                continue
            profile, reason = fails[0]
            who = profile.id if profile else "an anonymous visitor"
            rule = _failing_rule(engine, ctx, placement, profile, content)
            raise snapshots.SnapshotError(
                f"sample decisions fall back: site {site!r}, placement {placement!r}"
                f"{f', rule {rule!r}' if rule else ''}: {len(fails)} of {len(visitors)} sampled "
                f"visitors fell back with {reason} (e.g. {who!r}); fix the rules or the data"
            )
    return n


def _failing_rule(
    engine: rules.Engine,
    ctx: rules.Context,
    placement: str,
    profile: snapshots.Profile | None,
    content: snapshots.ContentReader | None,
) -> str | None:
    """The id of the rule whose condition raised, from an explain run of the same decision."""
    try:
        d = engine.decide(
            visitor_id=profile.id if profile else None,
            profile=profile,
            ctx=ctx,
            placements=[placement],
            content=content,
            explain=True,
        )
    except Exception:  # naming the rule is a courtesy: the refusal stands without it
        return None
    for entry in d.trace or []:
        if entry.kind == "rule" and any(
            isinstance(c.value, str) and c.value.startswith("error:") for c in entry.conditions
        ):
            return entry.id
    return None
