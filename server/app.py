"""The ASGI application a worker serves: hot routes as plain ASGI in front of a starlette app.

`create_app` is a factory: uvicorn calls it in each worker process, after the fork, so every worker
opens its own LMDB environments (SPEC §10).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import gc
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .asgi import (
    JSON_HEADERS,
    ASGIApp,
    Receive,
    Scope,
    Send,
    error_body,
    send_error,
    send_response,
)
from .config import MASTER_PID_ENV, Secrets, Settings, load_secrets, settings_from_env
from .console import Console
from .decide.route import Decide
from .edge.answers import Answers
from .edge.posts import PROTOCOL_POSTS, BodyRoute
from .edge.remembering import PROTOCOL_ROUTES, Remembering
from .edge.routes import FRAGMENT_PREFIX, Edge, Fragment, remembering
from .edge.tick import TICK_BUDGET
from .fleet.node import FleetNode
from .lifecycle.admin import Admin
from .live import api as live_api
from .live.events import Pending, drain_forever
from .loop_probe import LoopProbe
from .ofrep.route import FLAGS_PATH, Ofrep
from .openapi import build_openapi
from .routes import build_routes
from .state import AppState
from .version import installed_version

log = logging.getLogger("edgeside.app")


# However still the pointers look, the full look (`WorldHolder.prepare`, in a thread) is made at
# least this often: a safety net for whatever a pointer's stat would not show.
FULL_LOOK_S = 10.0


async def _follow_snapshots(state: AppState, full_look_s: float = FULL_LOOK_S) -> None:
    """Switch to newly activated snapshots: look at the active pointers on the loop (a few stat
    calls), open what moved off the loop, swap on it."""
    holder = state.holder
    interval = state.settings.reload_interval_s
    loop = asyncio.get_running_loop()
    last_full = loop.time()
    while True:
        nudged = await holder.wait(interval)  # sooner when this worker activated a version
        if not (nudged or holder.moved() or loop.time() - last_full >= full_look_s):
            continue  # nothing moved: no thread, no GIL hand-over
        last_full = loop.time()
        try:
            new = await asyncio.to_thread(holder.prepare)
        except Exception:  # keep following: the next activation may be sound
            log.exception("snapshot reload failed")
            holder.forget_pointers()  # look again at the next interval
            continue
        if new is not None:
            holder.commit(new)


async def _sweep_live(state: AppState) -> None:
    """Expire old visitors and cap the store's size; every worker may run it (it is idempotent)."""
    interval = state.settings.live.sweep_interval_s
    while True:
        await asyncio.sleep(interval)
        live = state.live
        if live is None:
            continue
        try:
            await asyncio.to_thread(live.sweep, time.time())
        except Exception:
            log.exception("live store sweep failed")


# How often the decisions served since the last flush are added to the metrics (`_flush_counts`).
COUNT_FLUSH_S = 0.2


async def _flush_counts(state: AppState, interval: float = COUNT_FLUSH_S) -> None:
    """Add the answers reused from memos to the metrics a little at a time (a fresh decision is
    counted when made). The service keeps each reused `Served` until a flush (another hit then
    only bumps its count); left to the scrape, or to its own cap of 10 000, one flush was 25-84
    ms on the loop (5 000-10 000 pending, in process, load ~20): a stall at every Prometheus
    scrape, and inside one request every 10 000. Every `interval` it is a few hundred at most,
    ~1-3 ms, and none of those objects lives long enough for the cyclic collector to walk them
    twice (issue 15 item 4)."""
    service = state.service
    while True:
        await asyncio.sleep(interval)
        try:
            service.flush_counts()
        except Exception:  # counting must never stop: the next flush tries again
            log.exception("flushing decision counts failed")


def _background(state: AppState, fleet: FleetNode | None = None) -> list[asyncio.Task[None]]:
    tasks = [
        asyncio.create_task(_follow_snapshots(state)),
        asyncio.create_task(_flush_counts(state)),
    ]
    live = state.live
    if live is not None:
        metrics = state.metrics

        def count(result: str, n: float) -> None:
            metrics.live_writes.inc((result,), n)

        on_applied = state.log_events
        if fleet is not None:  # the fleet: what was applied here goes out on the live stream

            def on_applied(batch: list[tuple[Pending, str | None]]) -> None:
                state.log_events(batch)
                fleet.offer(batch)

        tasks.append(
            asyncio.create_task(drain_forever(state.ingest, live, state.resolve, on_applied, count))
        )
        tasks.append(asyncio.create_task(_sweep_live(state)))
        if state.triggers is not None:
            tasks.append(asyncio.create_task(state.triggers.run()))
    if state.decision_log.enabled:
        tasks.append(asyncio.create_task(state.decision_log.run()))
    if state.settings.loop_probe_ms > 0:
        probe = LoopProbe(state.settings.loop_probe_ms / 1000.0)
        stall = state.metrics.loop_stall

        def report() -> None:
            loop, collection, by_generation, loop_cpu = probe.take()
            stall.set(("loop",), loop)
            stall.set(("loop_cpu",), loop_cpu)
            stall.set(("gc",), collection)
            for generation, took in enumerate(by_generation):
                stall.set((f"gc{generation}",), took)

        state.before_scrape.append(report)
        tasks.append(asyncio.create_task(probe.run()))
    return tasks


def _tune_gc() -> None:
    """Keep the cyclic garbage collector off the request path as far as is safe.

    What start-up loaded (compiled rules, readers, modules) lives as long as the worker: frozen, no
    collection scans it again. And a request allocates a few dozen short-lived containers, so the
    default threshold (700) runs a young collection every few requests; with 50 000 it runs every
    few thousand. Nothing of ours relies on collection for timely cleanup (readers and
    environments are closed explicitly), and the memos bound what stays alive.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


Handler = Callable[[AppState, Scope, Receive, Send], Awaitable[None]]


class HotRoute:
    """A hot handler as a raw ASGI endpoint, so starlette can route to it too (CORS, OPTIONS)."""

    def __init__(self, state: AppState, handler: Handler, methods: tuple[str, ...]) -> None:
        self.state = state
        self.handler = handler
        self.methods = methods
        # RFC 9110: a 405 names the methods the route does answer.
        self.refusal = (
            [*JSON_HEADERS, (b"allow", ", ".join(methods).encode())],
            error_body("method_not_allowed", "use " + " or ".join(methods)),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.state
        too_long = state.builder.oversized_header(scope["headers"])
        if too_long is not None:
            limit = state.settings.limits.max_header_bytes
            name = too_long.decode("latin-1")[:64]
            await send_error(send, 431, "header_too_large", f"a header is over {limit} bytes", name)
            return
        if scope["method"] not in self.methods:
            await send_response(send, 405, *self.refusal)
            return
        await self.handler(state, scope, receive, send)


def hot_routes(
    state: AppState, edge: Edge, fragment: Fragment, decide: Decide
) -> dict[str, HotRoute]:
    """The plain-ASGI routes by path; `FRAGMENT_PREFIX` stands for `/v1/fragments/{placement}`."""
    return {
        "/v1/edge": HotRoute(state, edge, ("GET", "HEAD")),
        "/v1/decide": HotRoute(state, decide, ("POST",)),
        "/v1/events": HotRoute(state, live_api.events, ("POST",)),
        FRAGMENT_PREFIX: HotRoute(state, fragment, ("GET", "HEAD")),
    }


class EdgesideApp:
    """Sends the hot routes straight to their handlers — the GET ones behind their answer memo
    (`remembering`) — and the rest through starlette.

    With CORS configured (`remembering` is None) every request goes through starlette, whose
    middleware answers preflights.
    """

    def __init__(
        self,
        starlette: ASGIApp,
        hot: dict[str, HotRoute],
        remembering: dict[str, Remembering] | None,
    ) -> None:
        self.starlette = starlette
        routes: dict[str, ASGIApp] = {}
        if remembering is not None:
            routes.update(hot)
            routes.update(remembering)
        self.hot = routes
        self.fragment = self.hot.pop(FRAGMENT_PREFIX, None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            route = self.hot.get(path)
            if route is None and self.fragment is not None and path.startswith(FRAGMENT_PREFIX):
                route = self.fragment
            if route is not None:
                await route(scope, receive, send)
                return
        await self.starlette(scope, receive, send)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 answers, in the API's error shape."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
    message = exc.detail if isinstance(exc, HTTPException) else "error"
    headers = exc.headers if isinstance(exc, HTTPException) else None  # a 405's `Allow`
    return Response(error_body(code, message), status, headers, media_type="application/json")


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s", request.url.path, exc_info=exc)
    return Response(
        error_body("internal_error", "an internal error occurred; it has been logged"),
        500,
        media_type="application/json",
    )


def build_app(settings: Settings, secrets: Secrets) -> EdgesideApp:
    state = AppState(settings, secrets)
    admin = Admin(state)
    answers = Answers(state)
    edge = Edge(answers)
    fragment = Fragment(answers, settings.fragment_max_age_s)
    decide = Decide(state)
    hot = hot_routes(state, edge, fragment, decide)
    # The GET routes behind their answer memo, and `POST /v1/decide`: server/edge/protocol.py
    # answers them before ASGI.
    known: dict[str, Remembering] | None = None
    posts: dict[bytes, BodyRoute] = {}
    if not settings.cors_origins:
        known = remembering(state, answers, edge, fragment, hot["/v1/edge"], hot[FRAGMENT_PREFIX])
        posts[b"/v1/decide"] = BodyRoute(state, "decide", functools.partial(decide.respond, state))
    fleet = FleetNode.create(state, admin.life)  # None without a broker: the node works alone
    if fleet is not None:
        state.notes.append(fleet.notes)
    console = Console(state)  # /console (issue 19)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, object]]:
        await asyncio.to_thread(state.holder.refresh)
        state.open_live()
        _tune_gc()
        tasks = _background(state, fleet)
        await admin.start()
        if fleet is not None:
            await fleet.start()
        # What the HTTP protocol answers by itself: handed to it in the lifespan state.
        protocol = {path.encode(): route for path, route in (known or {}).items()}
        await console.start()
        try:
            yield {
                PROTOCOL_ROUTES: protocol,
                PROTOCOL_POSTS: posts,
                TICK_BUDGET: settings.tick_budget_ms / 1000.0,
            }
        finally:
            if fleet is not None:
                await fleet.stop()
            await console.stop()
            await admin.stop()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            with contextlib.suppress(Exception):
                await state.decision_log.flush()
            state.close_live()
            state.holder.current.close()

    ofrep = Ofrep()
    middleware = []
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST"],
                # OFREP's web provider revalidates its bulk answer with If-None-Match.
                allow_headers=["content-type", "if-none-match"],
                expose_headers=["etag", "retry-after"],
            )
        )
    routes = [
        *(
            Route(
                path + "{placement}" if path == FRAGMENT_PREFIX else path,
                route,
                methods=[*route.methods, "OPTIONS"],
            )
            for path, route in hot.items()
        ),
        # OFREP (server/ofrep/): through starlette, for its `{key}` path parameter.
        Route(FLAGS_PATH, HotRoute(state, ofrep.bulk, ("POST",)), methods=["POST", "OPTIONS"]),
        Route(
            FLAGS_PATH + "/{key:path}",
            HotRoute(state, ofrep.single, ("POST",)),
            methods=["POST", "OPTIONS"],
        ),
        *build_routes(state, build_openapi(installed_version())),
        *admin.routes(),
        *(fleet.routes() if fleet is not None else []),
        *console.routes(),
    ]
    starlette = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
    )
    return EdgesideApp(starlette, hot, known)


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_master(environ: Mapping[str, str] | None = None) -> bool:
    """In a worker process, ask the kernel for SIGTERM when the master dies (Linux
    `PR_SET_PDEATHSIG`): a SIGKILLed master left its workers serving with PPID 1, holding the port,
    so a restart failed with `Address already in use` (issue 14, defect 9). SIGTERM, not SIGKILL:
    uvicorn's graceful shutdown lets in-flight requests finish. True if armed."""
    env = os.environ if environ is None else environ
    master = env.get(MASTER_PID_ENV, "")
    if not master.isdigit() or int(master) == os.getpid():
        return False  # one process serving alone: it is the master
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):  # not Linux: nothing to arm
        return False
    # The master may have died before the signal was armed: then nobody will send it.
    if os.getppid() != int(master):
        os.kill(os.getpid(), signal.SIGTERM)
    return True


def create_app() -> EdgesideApp:
    """uvicorn's factory: settings and secrets come from the worker's environment."""
    die_with_master()
    return build_app(settings_from_env(), load_secrets())
