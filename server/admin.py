"""Admin API of the snapshot lifecycle (SPEC §7): push, list, activate, roll back.

    PUT  /v1/admin/snapshots/{kind}                     a .tar body -> verified, validated, active
    GET  /v1/admin/snapshots                            versions, states, ages, sizes per kind
    POST /v1/admin/snapshots/{kind}/activate/{version}  re-activate a kept version
    POST /v1/admin/snapshots/{kind}/rollback            back to the version active before

Whichever worker receives an admin request does the work; the others notice the moved `active`
symlink within `reload_interval_s` (server/world.py). The pipeline of a push — unpack, hash,
signature, open, smoke validation, install, activate — runs in a thread so the event loop keeps
serving decisions meanwhile; pull mode (server/pull.py) feeds the same pipeline.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import shutil
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

import rules
import snapshots
from snapshots import archive, delta, store
from snapshots.manifest import DELTA_KIND, KINDS, Manifest, read_manifest
from snapshots.scan import scan
from snapshots.verify import check_snapshot

from .asgi import error_body
from .state import AppState
from .world import World, _open_rules

PUSH_KINDS = (*KINDS, DELTA_KIND)
SAMPLE_PROFILES = 20
SAMPLE_SITES = 8
PULL_STATE = ".pull-state"
_encode = msgspec.json.Encoder().encode


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
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def _no_space(exc: OSError) -> Refusal:
    return Refusal(
        507,
        "insufficient_storage",
        f"no space left in the data directory ({exc.strerror}); the push was dropped and nothing "
        "changed — free space (or lower EDGESIDE_KEEP_VERSIONS) and push again",
    )


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def refusal_of(exc: snapshots.SnapshotError) -> Refusal:
    """Every snapshot failure as a 4xx: the class names the failure, the message says why."""
    code = _snake(type(exc).__name__)
    if isinstance(exc, store.StoreBusy | delta.WrongBase | store.NoPrevious):
        return Refusal(409, code, str(exc))
    if isinstance(exc, store.UnknownVersion):
        return Refusal(404, code, str(exc))
    if isinstance(exc, snapshots.UnsafeArchive):
        return Refusal(400, code, str(exc))
    return Refusal(422, code, str(exc))


# -- response bodies ------------------------------------------------------------------------------


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


class WorkerInfo(msgspec.Struct):
    pid: int
    versions: dict[str, str]
    swaps: int


class PullStatus(msgspec.Struct):
    """What pull mode last did for a kind (kept on disk beside the versions)."""

    kind: str
    url: str
    etag: str | None = None
    version: str | None = None
    last_ok: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None


_pull_decoder = msgspec.json.Decoder(PullStatus)


class StatusBody(msgspec.Struct):
    kinds: list[KindStatus]
    worker: WorkerInfo
    signed: bool
    keep_versions: int
    pull: list[PullStatus]


class SwitchResult(msgspec.Struct):
    kind: str
    version: str
    previous: str | None
    message: str


# -- the pipeline ---------------------------------------------------------------------------------


class Lifecycle:
    """The node's side of a push: everything between a received .tar and an active version."""

    def __init__(self, data_dir: str, signing_key: bytes | None, keep: int) -> None:
        self.data_dir = Path(data_dir)
        self.signing_key = signing_key
        self.keep = max(1, keep)

    @property
    def signature_note(self) -> str:
        if self.signing_key is None:
            return "not checked: no EDGESIDE_SIGNING_KEY on this node (unsigned snapshots accepted)"
        return "verified"

    def sweep(self) -> None:
        """Remove leftovers of uploads a crash interrupted; skip kinds being pushed right now."""
        for kind in KINDS:
            try:
                with store.locked(self.data_dir, kind):
                    store.clean_staging(self.data_dir, kind)
            except store.StoreBusy:
                continue

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
                if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
                    raise _no_space(exc) from None
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
                checked = self.validate(kind, unpacked, manifest, world)
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
                engine, _ = _open_rules(path, self.signing_key)
            if engine is None:
                return 0
            sample = profiles.sample(SAMPLE_PROFILES) if profiles is not None else []
            return _sample_decisions(engine, sample, content)
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
            self.validate(kind, path, manifest, world)
        except _INVALID as exc:
            raise ValidationFailed(f"smoke validation failed: {exc}") from None
        previous = store.active_version(self.data_dir, kind)
        store.activate(self.data_dir, kind, version, keep=self.keep)
        return SwitchResult(kind, version, previous, f"{kind} {version} is active")

    def rollback(self, kind: str) -> SwitchResult:
        version, previous = store.rollback(self.data_dir, kind)
        return SwitchResult(kind, version, previous, f"{kind} rolled back to {version}")

    def pull_status(self) -> list[PullStatus]:
        out: list[PullStatus] = []
        for kind in KINDS:
            path = store.versions_dir(self.data_dir, kind) / PULL_STATE
            try:
                out.append(_pull_decoder.decode(path.read_bytes()))
            except (FileNotFoundError, msgspec.DecodeError):
                continue
        return out

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


def _sample_decisions(
    engine: rules.Engine,
    sample: list[snapshots.Profile],
    content: snapshots.ContentReader | None,
) -> int:
    """Decide every placement of a few sites for sampled visitors (and an anonymous one).

    `Engine.decide` fails open, so an exception inside the rules shows as an `internal_error`
    fallback: that is what refuses the snapshot.
    """
    now = time.time()
    visitors: list[snapshots.Profile | None] = [None, *sample]
    n = 0
    for site in sorted(engine.ruleset.sites)[:SAMPLE_SITES]:
        placements = engine.placements(site)
        if not placements:
            continue
        ctx = rules.Context(site=site, now=now)
        for profile in visitors:
            d = engine.decide(
                visitor_id=profile.id if profile else None,
                profile=profile,
                ctx=ctx,
                placements=placements,
                content=content,
            )
            n += 1
            broken = [p.placement for p in d.placements if p.fallback == "internal_error"]
            if broken:
                who = profile.id if profile else "an anonymous visitor"
                raise snapshots.SnapshotError(
                    f"a sample decision failed: site {site!r}, placements {broken}, visitor "
                    f"{who!r} fell back with internal_error; fix the rules or the data"
                )
    return n


# -- HTTP -----------------------------------------------------------------------------------------


def _json(body: Any, status: int = 200) -> Response:
    return Response(_encode(body), status, media_type="application/json")


def _refused(r: Refusal) -> Response:
    return Response(error_body(r.code, r.message, r.field), r.status, media_type="application/json")


async def _receive(request: Request, dest: Path, limit: int) -> int:
    """Stream the body to `dest` chunk by chunk (never whole in memory), at most `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Refusal(400, "bad_request", "Content-Length is not a number")
        if int(declared) > limit:
            raise Refusal(
                413, "too_large", f"upload of {int(declared)} bytes exceeds the limit of {limit}"
            )
    size = 0
    try:
        with open(dest, "xb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise Refusal(413, "too_large", f"upload exceeds the limit of {limit} bytes")
                f.write(chunk)
    except ClientDisconnect:
        raise Refusal(400, "incomplete_upload", "the client went away mid-upload") from None
    if declared is not None and size != int(declared):
        raise Refusal(400, "incomplete_upload", f"received {size} of {declared} bytes")
    if size == 0:
        raise Refusal(400, "empty_upload", "the request body is empty; send a snapshot .tar")
    return size


# A refusal sent while the client is still uploading makes the kernel reset the connection, and
# the client may lose the answer with it. Reading a little of the body first lets small uploads
# finish and see why they were refused; large ones from an unauthorised client are not read.
REFUSED_DRAIN_BYTES = 1 << 20


async def _drain(request: Request, limit: int) -> None:
    read = 0
    try:
        async for chunk in request.stream():
            read += len(chunk)
            if read > limit:
                return
    except ClientDisconnect:
        return


def build_admin_routes(state: AppState, life: Lifecycle) -> list[Route]:
    settings = state.settings
    key = life.signing_key
    life = Lifecycle(settings.data, key, settings.keep_versions)

    def guarded(
        handler: Callable[[Request], Any],
    ) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            if not state.authorized(dict(request.scope["headers"])):
                await _drain(request, REFUSED_DRAIN_BYTES)
                return _refused(
                    Refusal(
                        401, "unauthorized", "admin routes need `Authorization: Bearer <token>`"
                    )
                )
            try:
                result: Response = await handler(request)
                return result
            except Refusal as r:
                return _refused(r)
            except snapshots.SnapshotError as exc:
                return _refused(refusal_of(exc))
            except OSError as exc:  # receiving, unpacking or installing onto a full disk
                if exc.errno in _NO_SPACE:
                    return _refused(_no_space(exc))
                raise

        return endpoint

    def kind_of(request: Request, allowed: tuple[str, ...]) -> str:
        kind: str = request.path_params["kind"]
        if kind not in allowed:
            raise Refusal(
                404, "unknown_kind", f"no snapshot kind {kind!r}; one of {allowed}", "kind"
            )
        return kind

    async def push(request: Request) -> Response:
        push_kind = kind_of(request, PUSH_KINDS)
        kind = "profiles" if push_kind == DELTA_KIND else push_kind
        with store.locked(settings.data, kind):
            staging = store.new_staging(settings.data, kind)
            try:
                tar_path = staging / "upload.tar"
                t0 = time.perf_counter()
                try:
                    async with asyncio.timeout(settings.upload_timeout_s):
                        size = await _receive(request, tar_path, settings.max_upload_bytes)
                except TimeoutError:
                    raise Refusal(
                        408,
                        "upload_timeout",
                        f"the upload took longer than {settings.upload_timeout_s:.0f}s "
                        "(EDGESIDE_UPLOAD_TIMEOUT_S); the push was dropped",
                    ) from None
                receive_ms = round((time.perf_counter() - t0) * 1000, 2)
                world = state.holder.acquire()
                try:
                    result = await asyncio.to_thread(life.ingest, push_kind, tar_path, size, world)
                finally:
                    state.holder.release(world)
                result.timings_ms = {"receive_ms": receive_ms, **result.timings_ms}
                if "total_ms" in result.timings_ms:
                    result.timings_ms["total_ms"] = round(
                        result.timings_ms["total_ms"] + receive_ms, 2
                    )
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return _json(result)

    async def listing(request: Request) -> Response:
        kinds = await asyncio.to_thread(life.status)
        world = state.holder.current
        return _json(
            StatusBody(
                kinds=kinds,
                worker=WorkerInfo(os.getpid(), dict(world.versions), state.holder.swaps),
                signed=key is not None,
                keep_versions=life.keep,
                pull=life.pull_status(),
            )
        )

    async def activate(request: Request) -> Response:
        kind = kind_of(request, KINDS)
        version: str = request.path_params["version"]
        if version.startswith(".") or "/" in version:
            raise Refusal(400, "bad_version", f"{version!r} is not a version name", "version")
        with store.locked(settings.data, kind):
            world = state.holder.acquire()
            try:
                result = await asyncio.to_thread(life.switch, kind, version, world)
            finally:
                state.holder.release(world)
        return _json(result)

    async def rollback(request: Request) -> Response:
        kind = kind_of(request, KINDS)
        with store.locked(settings.data, kind):
            result = await asyncio.to_thread(life.rollback, kind)
        return _json(result)

    return [
        Route("/v1/admin/snapshots", guarded(listing), methods=["GET"]),
        Route("/v1/admin/snapshots/{kind}", guarded(push), methods=["PUT"]),
        Route("/v1/admin/snapshots/{kind}/activate/{version}", guarded(activate), methods=["POST"]),
        Route("/v1/admin/snapshots/{kind}/rollback", guarded(rollback), methods=["POST"]),
    ]


class Admin:
    """The lifecycle's part of a worker: admin routes, the start-up sweep, pull mode."""

    def __init__(self, state: AppState) -> None:
        settings = state.settings
        key = state.secrets.signing_key.encode() if state.secrets.signing_key else None
        self.state = state
        self.life = Lifecycle(settings.data, key, settings.keep_versions)
        self._tasks: list[asyncio.Task[None]] = []

    def routes(self) -> list[Route]:
        return build_admin_routes(self.state, self.life)

    async def start(self) -> None:
        from .pull import Puller, parse_pull

        settings = self.state.settings
        if not settings.data:
            return
        await asyncio.to_thread(self.life.sweep)
        sources = parse_pull(settings.pull)
        if sources:
            puller = Puller(
                self.life,
                self.state.holder,
                sources,
                interval_s=settings.pull_interval_s,
                timeout_s=settings.pull_timeout_s,
                max_bytes=settings.max_upload_bytes,
            )
            self._tasks.append(asyncio.create_task(puller.run()))

    async def stop(self) -> None:
        from .pull import cancel

        for task in self._tasks:
            await cancel(task)
        self._tasks = []
