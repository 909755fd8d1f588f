"""The starlette routes: everything that is not on the hot path of a page request."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import auth
from .asgi import error_body
from .decide.world import KINDS
from .schemas import ReadyBody, SnapshotStatus
from .state import AppState

_encode = msgspec.json.Encoder().encode


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return content if isinstance(content, bytes) else _encode(content)


def _error(status: int, code: str, message: str, field: str | None = None) -> Response:
    return Response(error_body(code, message, field), status, media_type="application/json")


def refused_response(refused: auth.AuthError) -> Response:
    """The answer to a caller without the scope a route needs (401/403, naming the scope)."""
    return Response(
        refused.body,
        refused.status,
        headers={"www-authenticate": f'Bearer scope="{refused.scope}"'},
        media_type="application/json",
    )


def build_routes(state: AppState, openapi: bytes) -> list[Route]:
    def guarded(
        handler: Callable[[Request], Response], scope: str = "profiles"
    ) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            refused = auth.require(request, scope)
            if refused is not None:
                return refused_response(refused)
            return handler(request)

        return endpoint

    def profile(request: Request) -> Response:
        world = state.holder.current
        if world.profiles is None:
            return _error(503, "no_snapshot", "no profiles snapshot is loaded")
        ident = request.path_params["id"]
        found = world.profiles.get(ident)
        if found is None and ":" in ident:
            kind, _, value = ident.partition(":")
            found = world.profiles.lookup({kind: value})
        if found is None:
            return _error(404, "not_found", "no profile with this id or alias", "id")
        return JSONResponse(found)

    def content_item(request: Request) -> Response:
        world = state.holder.current
        if world.content is None:
            return _error(503, "no_snapshot", "no content snapshot is loaded")
        item = world.content.get(request.path_params["id"])
        if item is None:
            return _error(404, "not_found", "no content item with this id", "id")
        return JSONResponse(item)

    async def healthz(request: Request) -> Response:
        return JSONResponse(b'{"status":"ok"}')

    async def readyz(request: Request) -> Response:
        ready, warnings = state.readiness()
        world = state.holder.current
        now = time.time()
        body = ReadyBody(
            ready=ready,
            snapshots=[
                SnapshotStatus(
                    kind=kind,
                    version=world.versions.get(kind),
                    age_s=round(now - world.loaded_at[kind], 3)
                    if kind in world.loaded_at
                    else None,
                )
                for kind in KINDS
            ],
            signed=bool(state.secrets.signing_key),
            warnings=warnings,
            sites=[] if world.engine is None else world.engine.sites,
        )
        return JSONResponse(body, status_code=200 if ready else 503)

    async def metrics(request: Request) -> Response:
        # Public unless a `metrics` token is configured (EDGESIDE_TOKENS_METRICS).
        refused = auth.require(request, "metrics")
        if refused is not None:
            return refused_response(refused)
        state.refresh_gauges()
        now = time.time()
        for kind, built in state.holder.current.created_at.items():
            state.metrics.snapshot_age.set((kind,), round(now - built, 3))
        return Response(
            state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(openapi)

    return [
        Route("/v1/profiles/{id:path}", guarded(profile), methods=["GET"]),
        Route("/v1/content/{id:path}", guarded(content_item), methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
    ]
