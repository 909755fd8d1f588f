"""Admin API of the snapshot lifecycle (SPEC §7): push, list, activate, roll back.

    PUT  /v1/admin/snapshots/{kind}                     a .tar body -> verified, validated, active
    GET  /v1/admin/snapshots                            versions, states, ages, sizes per kind
    POST /v1/admin/snapshots/{kind}/activate/{version}  re-activate a kept version
    POST /v1/admin/snapshots/{kind}/rollback            back to the version active before

The routes receive, lock and answer; the work is the pipeline's (server/lifecycle/pipeline.py),
run in a thread. A worker's lifecycle also sweeps leftovers at start-up and runs pull mode
(server/lifecycle/pull.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

import snapshots
from snapshots import delta, store
from snapshots.manifest import DELTA_KIND, KINDS, valid_version

from .. import auth
from ..asgi import content_length, error_body
from ..state import AppState
from .pipeline import (
    NO_SPACE,
    PUSH_KINDS,
    KindStatus,
    Lifecycle,
    Refusal,
    hold_within,
    no_space,
)
from .pull import Puller, PullStatus, cancel, parse_pull, pull_status

_encode = msgspec.json.Encoder().encode


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


class WorkerInfo(msgspec.Struct):
    pid: int
    versions: dict[str, str]
    swaps: int


class StatusBody(msgspec.Struct):
    kinds: list[KindStatus]
    worker: WorkerInfo
    signed: bool
    keep_versions: int
    pull: list[PullStatus]


# -- HTTP -----------------------------------------------------------------------------------------


def _json(body: Any, status: int = 200) -> Response:
    return Response(_encode(body), status, media_type="application/json")


def _refused(r: Refusal) -> Response:
    return Response(error_body(r.code, r.message, r.field), r.status, media_type="application/json")


async def _receive(request: Request, dest: Path, limit: int) -> int:
    """Stream the body to `dest` chunk by chunk (never whole in memory), at most `limit` bytes."""
    raw = request.headers.get("content-length")
    declared = content_length(raw)
    if raw is not None and declared is None:
        raise Refusal(400, "bad_request", "Content-Length is not a number")
    if declared is not None and declared > limit:
        told = str(raw)[:32]  # (the caller's text, bounded)
        raise Refusal(413, "too_large", f"upload of {told} bytes exceeds the limit of {limit}")
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
    if declared is not None and size != declared:
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


Endpoint = Callable[[Request], Awaitable[Response]]


def _guarded(state: AppState, handler: Endpoint) -> Endpoint:
    """An admin endpoint: the bearer token first, then every refusal as its 4xx (or 507)."""

    async def endpoint(request: Request) -> Response:
        refused = auth.require(request, "push")
        if refused is not None:
            await _drain(request, REFUSED_DRAIN_BYTES)
            return _refused(Refusal(refused.status, refused.code, refused.message, refused.scope))
        try:
            return await handler(request)
        except Refusal as r:
            return _refused(r)
        except snapshots.SnapshotError as exc:
            return _refused(refusal_of(exc))
        except OSError as exc:  # receiving, unpacking or installing onto a full disk
            if exc.errno in NO_SPACE:
                return _refused(no_space(exc))
            raise

    return endpoint


def _kind_of(request: Request, allowed: tuple[str, ...]) -> str:
    kind: str = request.path_params["kind"]
    if kind not in allowed:
        raise Refusal(404, "unknown_kind", f"no snapshot kind {kind!r}; one of {allowed}", "kind")
    return kind


def build_admin_routes(state: AppState, life: Lifecycle) -> list[Route]:
    settings = state.settings
    key = life.signing_key

    async def push(request: Request) -> Response:
        push_kind = _kind_of(request, PUSH_KINDS)
        kind = "profiles" if push_kind == DELTA_KIND else push_kind
        with contextlib.ExitStack() as held:
            await hold_within(held, settings.data, kind)
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
                if result.activated:
                    state.holder.nudge()  # this worker serves it now, not at its next look
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
                pull=pull_status(life.data_dir),
            )
        )

    async def activate(request: Request) -> Response:
        kind = _kind_of(request, KINDS)
        version: str = request.path_params["version"]
        if not valid_version(version):  # the one grammar (snapshots/manifest.py)
            raise Refusal(400, "bad_version", f"{version!r} is not a version name", "version")
        with contextlib.ExitStack() as held:
            await hold_within(held, settings.data, kind)
            world = state.holder.acquire()
            try:
                result = await asyncio.to_thread(life.switch, kind, version, world)
            finally:
                state.holder.release(world)
        state.holder.nudge()
        return _json(result)

    async def rollback(request: Request) -> Response:
        kind = _kind_of(request, KINDS)
        with contextlib.ExitStack() as held:
            await hold_within(held, settings.data, kind)
            result = await asyncio.to_thread(life.rollback, kind)
        state.holder.nudge()
        return _json(result)

    return [
        Route("/v1/admin/snapshots", _guarded(state, listing), methods=["GET"]),
        Route("/v1/admin/snapshots/{kind}", _guarded(state, push), methods=["PUT"]),
        Route(
            "/v1/admin/snapshots/{kind}/activate/{version}",
            _guarded(state, activate),
            methods=["POST"],
        ),
        Route("/v1/admin/snapshots/{kind}/rollback", _guarded(state, rollback), methods=["POST"]),
    ]


class Admin:
    """The lifecycle's part of a worker: admin routes, the start-up sweep, pull mode."""

    def __init__(self, state: AppState) -> None:
        settings = state.settings
        key = state.secrets.signing_key.encode() if state.secrets.signing_key else None
        self.state = state
        self.life = Lifecycle(settings.data, key, settings.keep_versions, state.holder)
        self._tasks: list[asyncio.Task[None]] = []

    def routes(self) -> list[Route]:
        return build_admin_routes(self.state, self.life)

    async def start(self) -> None:
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
        for task in self._tasks:
            await cancel(task)
