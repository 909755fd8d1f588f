"""The console's HTTP side: its page, its JSON API, and what it runs in each worker.

    GET  /console                      the page (static; it asks the API whether it is signed in)
    GET  /console/static/{name}        its script and style sheet
    POST /console/api/session          {"token"} → session cookie; GET: the CSRF token; DELETE
    GET  /console/api/rules            the active rules file, its cardinality
    POST /console/api/check            {"text"} → diagnostics (as `edgeside rules check`)
    POST /console/api/preview          visitor + context → active and candidate decisions, traced
    POST /console/api/impact           candidate replayed over the last N logged decisions (with
                                       `Accept: application/x-ndjson`: progress lines, then it)
    GET  /console/api/shadow           the shadow's agreement; POST starts one
    POST /console/api/shadow/promote   the shadow becomes the active rules snapshot
    POST /console/api/shadow/discard
    GET  /console/api/analytics        rates, intervals, lift from the decision log

Every API route needs a session (or the token as a bearer header, for scripts); every change
also its CSRF token and a same-site request (server/console/auth.py). Bodies are msgspec types,
bounded in size; nothing here can answer a 5xx for bad input.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

import rules
import snapshots
from rules.analysis import Report as RulesReport
from rules.analysis import SiteCardinality
from snapshots import archive, store

from .. import auth as scoped_auth
from ..asgi import content_length, error_body
from ..state import AppState
from ..visitor import Visitor
from . import auth, impact, impact_stream, shadow
from .analytics import AnalyticsBody, analytics

log = logging.getLogger("edgeside.console")

MAX_RULES_BYTES = 512 * 1024
MAX_BODY_BYTES = MAX_RULES_BYTES + 16 * 1024
MAX_ANALYTICS_RECORDS = 200_000
MAX_IMPACT_LAST = 100_000
CANDIDATE_CACHE = 8

_encode = msgspec.json.Encoder().encode
_STATIC = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}
# The page runs only its own script and style; nothing may frame it.
_PAGE_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}

Hour = Annotated[int, msgspec.Meta(ge=0, le=23)]
Short = Annotated[str, msgspec.Meta(max_length=256)]
RulesText = Annotated[str, msgspec.Meta(max_length=MAX_RULES_BYTES)]


class SignIn(msgspec.Struct, forbid_unknown_fields=True):
    token: Annotated[str, msgspec.Meta(max_length=512)]


class CheckIn(msgspec.Struct, forbid_unknown_fields=True):
    text: RulesText


class PreviewContext(msgspec.Struct, forbid_unknown_fields=True):
    site: Short = "default"
    path: Short | None = None
    country: Short | None = None
    city: Short | None = None
    locale: Short | None = None
    hour: Hour | None = None
    device: Short | None = None
    consent: bool = True


class PreviewIn(msgspec.Struct, forbid_unknown_fields=True):
    visitor: Short = ""
    context: PreviewContext = msgspec.field(default_factory=PreviewContext)
    candidate: RulesText | None = None
    placements: Annotated[list[Short], msgspec.Meta(max_length=64)] = msgspec.field(
        default_factory=list
    )


class ImpactIn(msgspec.Struct, forbid_unknown_fields=True):
    candidate: RulesText
    last: Annotated[int, msgspec.Meta(ge=1, le=MAX_IMPACT_LAST)] = impact.DEFAULT_LAST


class ShadowIn(msgspec.Struct, forbid_unknown_fields=True):
    candidate: RulesText
    share: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.1


class Checked(msgspec.Struct):
    ok: bool
    errors: int
    warnings: int
    diagnostics: list[rules.Diagnostic]
    cardinality: list[SiteCardinality]
    max_keys: int | None


class ActiveRules(msgspec.Struct):
    version: str | None
    file: str | None
    text: str
    checked: Checked | None
    sites: dict[str, list[str]]


class DecisionView(msgspec.Struct):
    placements: list[rules.PlacementDecision]
    segments: list[str]
    key: str
    trace: list[rules.TraceEntry]
    items: dict[str, str]  # content id → title


class PreviewOut(msgspec.Struct):
    visitor: str | None  # the profile found, or None (anonymous or unknown)
    placements: list[str]
    active: DecisionView | None
    candidate: DecisionView | None
    candidate_check: Checked | None


class Refusal(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        _encode(body),
        status,
        {"cache-control": "no-store", **(headers or {})},
        media_type="application/json",
    )


def _refused(status: int, code: str, message: str, field: str | None = None) -> Response:
    return Response(
        error_body(code, message, field),
        status,
        {"cache-control": "no-store"},
        media_type="application/json",
    )


def checked(text: str) -> tuple[rules.RuleSet | None, Checked]:
    """The diagnostics `edgeside rules check` prints, as data."""
    ruleset, diags, report = rules.analyze_text(text, filename="candidate.yaml")
    return ruleset, _checked(ruleset, diags, report)


def _checked(
    ruleset: rules.RuleSet | None, diags: list[rules.Diagnostic], report: RulesReport | None
) -> Checked:
    errors = sum(1 for d in diags if d.severity == "error")
    return Checked(
        ok=ruleset is not None,
        errors=errors,
        warnings=len(diags) - errors,
        diagnostics=diags[:200],
        cardinality=report.cardinality if report else [],
        max_keys=report.max_keys if report else None,
    )


def parse_visitor(text: str) -> Visitor:
    """`` → anonymous; `type:value` → an identifier; anything else a canonical id."""
    text = text.strip()
    if not text:
        return Visitor()
    if ":" in text:
        kind, _, value = text.partition(":")
        if kind and value:
            return Visitor(ids={kind: value})
    return Visitor(canonical=text)


class Console:
    """The console's part of a worker: routes, and the shadow follower's background task."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.sessions = auth.Sessions(auth.console_secret(), credentials=lambda: state.credentials)
        self.data_dir = state.settings.data
        self.shadow_metric = state.metrics.shadow_decisions
        self.follower = shadow.Follower(self.data_dir, state.service, self.shadow_metric)
        self._candidates: collections.OrderedDict[str, tuple[Checked, rules.Engine | None]] = (
            collections.OrderedDict()
        )
        self._active_text: tuple[str | None, str | None, str] = (None, None, "")
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self.data_dir:
            self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.follower.stop()

    async def _follow(self) -> None:
        while True:
            try:
                # On the loop: the hook is called on it too, so counts never change mid-save.
                self.follower.poll()
            except Exception:
                log.exception("shadow follower failed")
            await asyncio.sleep(1.0)

    # -- helpers ------------------------------------------------------------------------------

    def candidate(self, text: str) -> tuple[Checked, rules.Engine | None]:
        """A candidate checked and compiled once, kept while it is among the last few used."""
        digest = hashlib.sha256(text.encode()).hexdigest()
        hit = self._candidates.get(digest)
        if hit is not None:
            self._candidates.move_to_end(digest)
            return hit
        ruleset, result = checked(text)
        engine = rules.compile_ruleset(ruleset) if ruleset is not None else None
        self._candidates[digest] = (result, engine)
        while len(self._candidates) > CANDIDATE_CACHE:
            self._candidates.popitem(last=False)
        return result, engine

    def active_rules(self) -> tuple[str | None, str | None, str]:
        """(version, file name, text) of the rules this worker serves."""
        world = self.state.holder.current
        version = world.versions.get("rules")
        if version is None:
            return None, None, ""
        if self._active_text[0] == version:
            return self._active_text
        path = world.paths.get("rules")
        try:
            _, files = snapshots.read_blob_snapshot(Path(path or ""), signing_key=None)
            name, data = sorted(files.items())[0]
            self._active_text = (version, name, data.decode("utf-8", "replace"))
        except (snapshots.SnapshotError, OSError, IndexError):
            self._active_text = (version, None, "")
        return self._active_text

    def _logs(self) -> Path | None:
        return self.state.decision_log.dir

    # -- auth ---------------------------------------------------------------------------------

    def _session_cookie(self, request: Request) -> str:
        return request.cookies.get(auth.SESSION_COOKIE, "")

    def _scopes(self, request: Request) -> tuple[frozenset[str], bool]:
        """(the caller's scopes, whether they came with a bearer token rather than a session)."""
        bearer = request.headers.get("authorization", "")
        scheme, _, token = bearer.partition(" ")
        if scheme.lower() == "bearer" and token:
            return auth.token_scopes(token.strip(), self.state.credentials), True
        return self.sessions.scopes(self._session_cookie(request)), False

    def _guard(self, request: Request) -> Response | None:
        """None when the request may go on; else the refusal (no detail on a 401)."""
        if auth.cross_site(request.headers, request.url.scheme):
            return _refused(403, "cross_site", "cross-site requests are refused")
        query: bytes = request.scope.get("query_string", b"")
        if query and scoped_auth.token_in_query(query):
            return _refused(
                401,
                "token_in_query",
                "credentials in the query string are refused (they end up in logs and caches); "
                "send `Authorization: Bearer <token>`",
            )
        scopes, bearer = self._scopes(request)
        if not scopes:
            return _refused(401, "unauthorized", "sign in")
        if auth.CONSOLE_SCOPE not in scopes:  # a bearer token of another scope
            return _refused(
                403,
                "forbidden",
                "this token lacks the `explain` scope the console needs",
                "explain",
            )
        if request.method not in ("GET", "HEAD") and not bearer:
            cookie = self._session_cookie(request)
            if not self.sessions.csrf_ok(cookie, request.headers.get(auth.CSRF_HEADER, "")):
                return _refused(403, "csrf", "the request lacks this session's CSRF token")
        return None

    def guarded(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            refusal = self._guard(request)
            if refusal is not None:
                return refusal
            try:
                return await handler(request)
            except Refusal as r:
                return _refused(r.status, r.code, r.message, r.field)

        return endpoint

    async def _body(self, request: Request, kind: type[Any]) -> Any:
        declared = content_length(request.headers.get("content-length"))
        if declared is not None and declared > MAX_BODY_BYTES:
            raise Refusal(413, "body_too_large", f"the body is over {MAX_BODY_BYTES} bytes")
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise Refusal(413, "body_too_large", f"the body is over {MAX_BODY_BYTES} bytes")
                chunks.append(chunk)
        except ClientDisconnect:
            raise Refusal(400, "incomplete_body", "the client went away") from None
        try:
            return msgspec.json.decode(b"".join(chunks), type=kind)
        except msgspec.ValidationError as exc:
            raise Refusal(422, "invalid_request", str(exc)) from None
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise Refusal(400, "malformed_json", f"the body is not valid JSON: {exc}") from None

    # -- routes -------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        g = self.guarded
        return [
            Route("/console", self.page, methods=["GET"]),
            Route("/console/", self.page, methods=["GET"]),
            Route("/console/static/{name}", self.static, methods=["GET"]),
            Route("/console/api/session", self.session, methods=["GET", "POST", "DELETE"]),
            Route("/console/api/rules", g(self.rules), methods=["GET"]),
            Route("/console/api/check", g(self.check), methods=["POST"]),
            Route("/console/api/preview", g(self.preview), methods=["POST"]),
            Route("/console/api/impact", g(self.impact), methods=["POST"]),
            Route("/console/api/shadow", g(self.shadow), methods=["GET", "POST"]),
            Route("/console/api/shadow/promote", g(self.promote), methods=["POST"]),
            Route("/console/api/shadow/discard", g(self.discard), methods=["POST"]),
            Route("/console/api/analytics", g(self.analytics), methods=["GET"]),
        ]

    async def page(self, request: Request) -> Response:
        return Response(_asset("index.html"), 200, _PAGE_HEADERS, media_type="text/html")

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        media = _STATIC.get(name)
        if media is None:
            return _refused(404, "not_found", "no such console file")
        return Response(_asset(name), 200, {"x-content-type-options": "nosniff"}, media_type=media)

    async def session(self, request: Request) -> Response:
        if auth.cross_site(request.headers, request.url.scheme):
            return _refused(403, "cross_site", "cross-site requests are refused")
        secure = request.url.scheme == "https"
        if request.method == "DELETE":
            return Response(
                status_code=204, headers={"set-cookie": auth.cookie_header("", 0, secure)}
            )
        if request.method == "GET":
            cookie = self._session_cookie(request)
            scopes = self.sessions.scopes(cookie)
            if not scopes:
                return _refused(401, "unauthorized", "sign in")
            return _json({"csrf": self.sessions.csrf(cookie), "scopes": sorted(scopes)})
        try:
            body: SignIn = await self._body(request, SignIn)
        except Refusal as r:
            return _refused(r.status, r.code, r.message, r.field)
        scopes = auth.token_scopes(body.token, self.state.credentials)
        if not scopes:
            return _refused(401, "unauthorized", "sign in")
        issued = self.sessions.issue(body.token)
        if issued is None:
            return _refused(
                403,
                "forbidden",
                "this token lacks the `explain` scope the console needs",
                "explain",
            )
        return _json(
            {"csrf": self.sessions.csrf(issued), "scopes": sorted(scopes)},
            headers={"set-cookie": auth.cookie_header(issued, int(self.sessions.ttl_s), secure)},
        )

    async def rules(self, request: Request) -> Response:
        version, name, text = self.active_rules()
        result = await asyncio.to_thread(self.candidate, text) if text else (None, None)
        world = self.state.holder.current
        sites: dict[str, list[str]] = {}
        if world.engine is not None:
            for site in sorted(world.engine.ruleset.sites):
                sites[site] = world.engine.placements(site)
        return _json(ActiveRules(version, name, text, result[0], sites))

    async def check(self, request: Request) -> Response:
        body: CheckIn = await self._body(request, CheckIn)
        result, _ = await asyncio.to_thread(self.candidate, body.text)
        return _json(result)

    async def preview(self, request: Request) -> Response:
        body: PreviewIn = await self._body(request, PreviewIn)
        cand_check: Checked | None = None
        cand_engine: rules.Engine | None = None
        if body.candidate is not None:
            cand_check, cand_engine = await asyncio.to_thread(self.candidate, body.candidate)
        state = self.state
        c = body.context
        country = c.country.upper() if c.country else None
        ctx = rules.Context(
            site=c.site or "default",
            path=c.path,
            locale=c.locale,
            device=c.device,
            geo=rules.Geo(country=country, city=c.city),
            hour=c.hour,
            consent=c.consent,
            now=time.time(),
        )
        visitor = parse_visitor(body.visitor) if ctx.consent else Visitor()
        holder = state.holder
        world = holder.acquire()
        try:
            engines = [e for e in (world.engine, cand_engine) if e is not None]
            names = list(body.placements)
            if not names:
                found: set[str] = set()
                for e in engines:
                    found.update(e.placements(ctx.site, ctx.locale))
                names = sorted(found)[:64]
            if not names:
                raise Refusal(422, "no_placements", f"site {ctx.site!r} has no placements")
            profile = state.service.lookup(world, visitor) if ctx.consent else None
            visitor_id = profile.id if profile is not None else _bucketing_id(visitor)

            def run(engine: rules.Engine | None) -> DecisionView | None:
                if engine is None:
                    return None
                d = engine.decide(
                    visitor_id=visitor_id,
                    profile=profile,
                    ctx=ctx,
                    placements=names,
                    content=world.content,
                    explain=True,
                )
                items: dict[str, str] = {}
                if world.content is not None:
                    for p in d.placements:
                        for cid in p.content:
                            item = world.content.get(cid)
                            if item is not None:
                                items[cid] = item.title
                return DecisionView(d.placements, d.segments, d.key, d.trace or [], items)

            out = PreviewOut(
                visitor=profile.id if profile is not None else None,
                placements=names,
                active=run(world.engine),
                candidate=run(cand_engine),
                candidate_check=cand_check,
            )
        finally:
            holder.release(world)
        return _json(out)

    async def impact(self, request: Request) -> Response:
        body: ImpactIn = await self._body(request, ImpactIn)
        result, engine = await asyncio.to_thread(self.candidate, body.candidate)
        if engine is None:
            return _json({"check": result}, 422)
        logs = self._logs()
        if logs is None:
            raise Refusal(409, "no_log", "the decision log is off (decision_log.dir is empty)")
        holder = self.state.holder
        if holder.current.engine is None:
            raise Refusal(409, "no_rules", "no active rules to compare with")
        held: list[Any] = []

        def hold() -> Callable[[], None]:
            world = holder.acquire()
            held.append(world)
            return lambda: holder.release(world)

        def work(report: impact_stream.Report) -> impact.ImpactReport:
            world = held[0]
            if world.engine is None:  # cannot happen once rules were active; said, not assumed
                raise Refusal(409, "no_rules", "no active rules to compare with")
            window = impact.last_decisions(
                logs, body.last, progress=lambda done, total: report("read", done, total)
            )
            return impact.replay(
                window,
                world.engine,
                engine,
                world.profiles,
                world.content,
                body.last,
                progress=lambda done, total: report("replay", done, total),
            )

        if impact_stream.wants_stream(request.headers.get("accept", "")):
            return StreamingResponse(
                impact_stream.stream(work, hold),
                200,
                {"cache-control": "no-store", "x-content-type-options": "nosniff"},
                media_type=impact_stream.MEDIA_TYPE,
            )
        release = hold()
        try:
            report = await asyncio.to_thread(work, lambda phase, done, total: None)
        finally:
            release()
        return _json(report)

    async def shadow(self, request: Request) -> Response:
        if request.method == "GET":
            return _json(await asyncio.to_thread(shadow.status, self.data_dir))
        body: ShadowIn = await self._body(request, ShadowIn)
        result, engine = await asyncio.to_thread(self.candidate, body.candidate)
        if engine is None:
            return _json({"check": result}, 422)
        if not self.data_dir:
            raise Refusal(409, "no_data", "the server has no data directory")
        now = time.time()
        spec = shadow.ShadowSpec(
            shadow.spec_id(body.candidate, body.share, now), body.candidate, body.share, now
        )
        await asyncio.to_thread(shadow.clear_spec, self.data_dir)
        await asyncio.to_thread(shadow.write_spec, self.data_dir, spec)
        self.follower.poll()  # this worker at once; the others within a second
        return _json(await asyncio.to_thread(shadow.status, self.data_dir))

    async def discard(self, request: Request) -> Response:
        await asyncio.to_thread(shadow.clear_spec, self.data_dir)
        self.follower.poll()
        return _json(await asyncio.to_thread(shadow.status, self.data_dir))

    async def promote(self, request: Request) -> Response:
        # Promoting pushes a rules snapshot: the `push` scope, as `PUT /v1/admin/snapshots/rules`
        # needs (issue 14); an explain-only session previews, replays and shadows, no more.
        if "push" not in self._scopes(request)[0]:
            raise Refusal(
                403,
                "forbidden",
                "promoting pushes a rules snapshot: this session's token lacks the `push` scope",
                "push",
            )
        spec = shadow.read_spec(self.data_dir) if self.data_dir else None
        if spec is None:
            raise Refusal(409, "no_shadow", "no shadow candidate to promote")
        result = await promote_rules(self.state, spec.text)
        await asyncio.to_thread(shadow.clear_spec, self.data_dir)
        self.follower.poll()
        return _json(result)

    async def analytics(self, request: Request) -> Response:
        logs = self._logs()
        if logs is None:
            return _json(AnalyticsBody(0, 0, {}, [], 0, 0))
        window = await asyncio.to_thread(
            impact.last_decisions, logs, MAX_ANALYTICS_RECORDS, None, ("decision", "event")
        )
        defaults: dict[str, str] = {}
        engine = self.state.holder.current.engine
        if engine is not None:
            for per in engine.ruleset.table.values():
                for name, p in per.items():
                    defaults.setdefault(name, p.default.variant)
        body = await asyncio.to_thread(analytics, window.records, defaults)
        return _json(body)


def _bucketing_id(visitor: Visitor) -> str | None:
    if visitor.canonical is not None:
        return visitor.canonical
    return next(iter(visitor.ids.values()), None)


async def promote_rules(state: AppState, text: str) -> Any:
    """Make `text` the active rules through the snapshot pipeline a push goes through: packed as
    a rules snapshot (signed with the node's key, if it has one), then unpacked, hashed,
    signature-checked, smoke-validated and activated by the lifecycle (server/admin.py)."""
    from ..lifecycle.pipeline import Lifecycle  # the lifecycle's one entry point used here

    settings = state.settings
    key = state.secrets.signing_key.encode() if state.secrets.signing_key else None
    life = Lifecycle(settings.data, key, settings.keep_versions, state.holder)
    data = text.encode("utf-8")
    try:
        with store.locked(settings.data, "rules"):
            work = store.new_staging(settings.data, "rules", prefix="promote-")
            try:
                built = work / "candidate"
                snapshots.write_blob_snapshot(
                    built,
                    kind="rules",
                    files={"rules.yaml": data},
                    signing_key=key,
                    sources={"console": hashlib.sha256(data).hexdigest()},
                )
                tar = archive.pack(built, work / "rules.tar")
                world = state.holder.acquire()
                try:
                    result = await asyncio.to_thread(
                        life.ingest, "rules", tar, tar.stat().st_size, world
                    )
                finally:
                    state.holder.release(world)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    except snapshots.SnapshotError as exc:  # busy, invalid, failed validation: nothing changed
        raise Refusal(
            409 if "busy" in type(exc).__name__.lower() else 422, "promote_refused", str(exc)
        ) from None
    except OSError as exc:
        raise Refusal(507, "insufficient_storage", f"cannot write the snapshot: {exc}") from None
    return result


_assets: dict[str, bytes] = {}


def _asset(name: str) -> bytes:
    """A static file of the package, read once per worker."""
    data = _assets.get(name)
    if data is None:
        data = _assets[name] = (
            resources.files("server.console").joinpath("static", name).read_bytes()
        )
    return data
