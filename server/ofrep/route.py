"""`POST /ofrep/v1/evaluate/flags/{key}` and `POST /ofrep/v1/evaluate/flags`: the OpenFeature
Remote Evaluation Protocol over the decision service (docs/ofrep.md).

A placement is a flag; its value is the variant name. Nothing is decided here: the OFREP context
becomes the same `ContextIn` `/v1/decide` reads (server/decide/context.py), the targeting key a
visitor, and `DecisionService.serve` decides — so OFREP answers exactly what `/v1/decide` and
`/v1/edge` answer for the same visitor, context and snapshots.

Trust is `/v1/edge`'s: a caller without credentials (a browser's web provider) is identified only
by its first-party cookie, so its targeting key is read as a cookie value and nothing else; naming a
visitor by another identifier (`type:value`, a canonical id) needs an authenticated caller
(`trusted`). Every error has the spec's shape, never a 5xx.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping

import msgspec

import rules

from .. import auth
from ..asgi import Headers, Receive, Refused, Scope, Send, read_json_body
from ..decide.context import ANONYMOUS, PLACEMENT_NAME
from ..decide.route import Worker
from ..schemas import ContextIn
from ..visitor import Visitor
from .schemas import (
    BulkEvaluationFailure,
    BulkEvaluationSuccess,
    ErrorCode,
    EvaluationFailure,
    EvaluationRequest,
    EvaluationSuccess,
    FlagNotFound,
    GeneralErrorResponse,
    MetadataValue,
    Reason,
)

FLAGS_PATH = "/ofrep/v1/evaluate/flags"

# An OpenFeature context holds a handful of attributes; the body limit bounds the bytes, this the
# work per attribute (a 64 KiB body can hold ten thousand `"a":0`).
MAX_ATTRIBUTES = 256
# Callers without credentials are rate-limited per targeting key and worker: a web provider asks
# once per page and polls every few seconds; a loop asking for one cookie far more often is not a
# page. The table is bounded (cleared when full: a flood of fresh keys can at worst reset every
# count, never refuse a visitor it has not seen).
RATE_WINDOW_S = 10.0
RATE_LIMIT = 200
_RATE_KEYS = 100_000

_decode_request = msgspec.json.Decoder(EvaluationRequest).decode
_encode = msgspec.json.Encoder().encode
_now = time.time
_JSON: Headers = [(b"content-type", b"application/json")]


class OfrepContext(msgspec.Struct):
    """The context attributes edgeside reads, flat as OpenFeature sends them; any other is
    ignored (an SDK adds its own). The rest of `ContextIn` (`/v1/decide`) by the same names;
    `country`, `region` and `city` are its `geo`."""

    targetingKey: str | None = None
    site: str | None = None
    locale: str | None = None
    url: str | None = None
    path: str | None = None
    referrer: str | None = None
    device: str | None = None
    timezone: str | None = None
    weather: str | None = None
    country: str | None = None
    region: str | None = None
    city: str | None = None
    hour: int | None = None
    weekday: int | None = None
    consent: bool | None = None
    now: float | None = None


_KNOWN = frozenset(OfrepContext.__struct_fields__)
_decode_context = msgspec.json.Decoder(OfrepContext).decode
_GEO = ("country", "region", "city")


class _Failed(Exception):
    """An OFREP error: the status and the spec's error code (`FLAG_NOT_FOUND` for a 404)."""

    def __init__(
        self, status: int, code: str, details: str, headers: Headers | None = None
    ) -> None:
        super().__init__(details)
        self.status = status
        self.code = code
        self.details = details
        self.headers = headers or []


def trusted(state: Worker, headers: Mapping[bytes, bytes]) -> bool:
    """Whether the caller may name a visitor by any identifier: True with the `decide` scope,
    False with no credentials (cookie only); 401 for credentials that are not valid and 403 for a
    token without the scope (server/auth.py decides both)."""
    if b"authorization" not in headers:
        return False
    refused = auth.require(headers, "decide")
    if refused is None:
        return True
    raise _Failed(refused.status, "GENERAL", refused.message)


class _Limiter:
    """Evaluations per targeting key, for callers without credentials: each key's window opens
    with its first evaluation (so a burst is never split by a window boundary and let through)."""

    def __init__(self) -> None:
        self.windows: dict[str, tuple[float, int]] = {}

    def admit(self, key: str, now: float) -> None:
        windows = self.windows
        opened, n = windows.get(key, (now, 0))
        if now - opened >= RATE_WINDOW_S:
            opened, n = now, 0
        elif n >= RATE_LIMIT:
            retry = max(1, math.ceil(opened + RATE_WINDOW_S - now))
            raise _Failed(
                429,
                "GENERAL",
                f"over {RATE_LIMIT} evaluations in {RATE_WINDOW_S:g} s for this targeting key",
                [(b"retry-after", str(retry).encode())],
            )
        if len(windows) >= _RATE_KEYS and key not in windows:
            windows.clear()
        windows[key] = (opened, n + 1)


class Ofrep:
    """Both OFREP routes of one worker (handlers for `server/app.py` `HotRoute`)."""

    def __init__(self) -> None:
        self.limiter = _Limiter()

    async def single(self, state: Worker, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        key = str(scope.get("path_params", {}).get("key", ""))
        extra: Headers = []
        try:
            status, body = 200, _encode(await self._single(state, scope, receive, key))
        except _Failed as failed:
            status, extra = failed.status, failed.headers
            if failed.code == "FLAG_NOT_FOUND":
                body = _encode(FlagNotFound(key, "FLAG_NOT_FOUND", failed.details))
            elif status == 400:
                body = _encode(EvaluationFailure(key, _code(failed.code), failed.details))
            else:
                body = _encode(GeneralErrorResponse(failed.details))
        await _send(send, status, [*_JSON, *extra], body)
        _count(state, "ofrep", status, started)

    async def bulk(self, state: Worker, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        headers: Headers = list(_JSON)
        try:
            answer = _encode(await self._bulk(state, scope, receive))
            tag = b'"' + hashlib.blake2b(answer, digest_size=16).hexdigest().encode() + b'"'
            headers.append((b"etag", tag))
            match = dict(scope["headers"]).get(b"if-none-match")
            if match is not None and _matches(match, tag):
                status, headers, answer = 304, [(b"etag", tag)], b""
            else:
                status = 200
        except _Failed as failed:
            status = failed.status
            headers.extend(failed.headers)
            if status == 400:
                answer = _encode(BulkEvaluationFailure(_code(failed.code), failed.details))
            else:
                answer = _encode(GeneralErrorResponse(failed.details))
        await _send(send, status, headers, answer)
        _count(state, "ofrep_bulk", status, started)

    async def _single(
        self, state: Worker, scope: Scope, receive: Receive, key: str
    ) -> EvaluationSuccess:
        headers = dict(scope["headers"])
        request = await _request(state, scope, receive, headers)
        if not PLACEMENT_NAME.fullmatch(key):
            raise _Failed(404, "FLAG_NOT_FOUND", "flag keys are placement names")
        visitor, ctx = self._asker(state, headers, request)
        world = state.holder.acquire()
        try:
            engine = world.engine
            if engine is not None and not engine.has_placement(ctx.site, key):
                raise _Failed(404, "FLAG_NOT_FOUND", f"no placement {key!r} for site {ctx.site!r}")
            served = state.service.serve(world, visitor, ctx, [key])
            state.service.emit(served, _now())
            return _flags(engine, ctx, served.decision)[0]
        finally:
            state.holder.release(world)

    async def _bulk(self, state: Worker, scope: Scope, receive: Receive) -> BulkEvaluationSuccess:
        headers = dict(scope["headers"])
        request = await _request(state, scope, receive, headers)
        visitor, ctx = self._asker(state, headers, request)
        world = state.holder.acquire()
        try:
            engine = world.engine
            if engine is None:
                return BulkEvaluationSuccess([])  # no rules yet: no flags to name
            names = engine.placements(ctx.site, ctx.locale)
            if not names:
                return BulkEvaluationSuccess([])
            served = state.service.serve(world, visitor, ctx, names)
            state.service.emit(served, _now())
            return BulkEvaluationSuccess(_flags(engine, ctx, served.decision))
        finally:
            state.holder.release(world)

    def _asker(
        self, state: Worker, headers: Mapping[bytes, bytes], request: EvaluationRequest
    ) -> tuple[Visitor, rules.Context]:
        """Who asks, in which context, checked in the spec's order: the caller's credentials,
        then the context, then the targeting key."""
        trust = trusted(state, headers)
        attributes = request.context
        if attributes is None:
            raise _Failed(400, "TARGETING_KEY_MISSING", "no context, so no targetingKey")
        given = _context(attributes)
        target = given.targetingKey
        if not target:
            raise _Failed(400, "TARGETING_KEY_MISSING", "the context has no targetingKey")
        limit = state.settings.limits.max_id_chars
        if len(target) > limit or not target.isascii() or not target.isprintable():
            raise _Failed(
                400,
                "INVALID_CONTEXT",
                f"targetingKey is 1 to {limit} printable ASCII characters"
                " - at `$.context.targetingKey`",
            )
        now = _now()
        if not trust:
            self.limiter.admit(target, now)
        ctx = state.builder.from_body(_context_in(given), now)
        if not ctx.consent:
            return ANONYMOUS, ctx
        if not trust:
            return Visitor(ids={state.settings.cookie.id_type: target}), ctx
        kind, sep, value = target.partition(":")
        if sep and kind and value:
            return Visitor(ids={kind: value}), ctx
        return Visitor(canonical=target), ctx


async def _request(
    state: Worker, scope: Scope, receive: Receive, headers: dict[bytes, bytes]
) -> EvaluationRequest:
    """The body, bounded by bytes before it is decoded; a refusal in the spec's shape."""
    if b"content-type" not in headers:
        # The body is JSON by the spec: a caller that does not say so is read as JSON (and an
        # empty body is a request without context, a 400 the spec declares, not a 415).
        headers = {**headers, b"content-type": b"application/json"}
    try:
        raw = await read_json_body(scope, receive, headers, state.settings.limits.max_body_bytes)
    except Refused as refused:
        # 405/413/415: statuses the spec does not list, kept for what HTTP says they mean.
        message = msgspec.json.decode(refused.body)["error"]["message"]
        raise _Failed(refused.status, "PARSE_ERROR", message) from None
    if not raw.strip():
        return EvaluationRequest()
    try:
        return _decode_request(raw)
    except msgspec.ValidationError as exc:
        raise _Failed(400, "INVALID_CONTEXT", str(exc)) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise _Failed(400, "PARSE_ERROR", f"the body is not valid JSON: {exc}") from None


def _context(attributes: dict[str, msgspec.Raw]) -> OfrepContext:
    """The attributes edgeside reads, typed; the others left undecoded."""
    if len(attributes) > MAX_ATTRIBUTES:
        raise _Failed(
            400,
            "INVALID_CONTEXT",
            f"{len(attributes)} context attributes; at most {MAX_ATTRIBUTES}",
        )
    known = [
        _encode(name) + b":" + bytes(raw) for name, raw in attributes.items() if name in _KNOWN
    ]
    try:
        return _decode_context(b"{" + b",".join(known) + b"}")
    except msgspec.ValidationError as exc:
        # msgspec's message ends `- at `$.hour``: the attribute is under `$.context`.
        detail = str(exc).replace("`$.", "`$.context.")
        raise _Failed(400, "INVALID_CONTEXT", detail) from None
    except msgspec.DecodeError as exc:
        # A value left raw by the first decode is checked only now (invalid UTF-8 in a string).
        raise _Failed(400, "PARSE_ERROR", f"the body is not valid JSON: {exc}") from None


def _context_in(given: OfrepContext) -> ContextIn:
    """`/v1/decide`'s context from the OFREP attributes, with its checks (clock ranges)."""
    fields = {
        name: getattr(given, name)
        for name in ContextIn.__struct_fields__
        if name != "geo" and getattr(given, name) is not None
    }
    geo = {name: getattr(given, name) for name in _GEO if getattr(given, name) is not None}
    if geo:
        fields["geo"] = geo
    try:
        return msgspec.convert(fields, ContextIn)
    except msgspec.ValidationError as exc:
        detail = str(exc).replace("`$.", "`$.context.")
        raise _Failed(400, "INVALID_CONTEXT", detail) from None


def _flags(
    engine: rules.Engine | None, ctx: rules.Context, decision: rules.Decision
) -> list[EvaluationSuccess]:
    out = []
    for p in decision.placements:
        metadata: dict[str, MetadataValue] = {"decisionKey": decision.key}
        if p.content:
            # Metadata values are scalars (the spec): content ids as one comma-separated string.
            metadata["contentIds"] = ",".join(p.content)
        if p.rule is not None:
            metadata["rule"] = p.rule
        if p.experiment is not None:
            metadata["experiment"] = p.experiment
        if p.arm is not None:
            metadata["arm"] = p.arm
        if p.fallback is not None:
            metadata["fallback"] = p.fallback
        out.append(
            EvaluationSuccess(
                key=p.placement,
                value=p.variant,
                reason=_reason(engine, ctx, p),
                variant=p.variant,
                metadata=metadata,
            )
        )
    return out


def _reason(engine: rules.Engine | None, ctx: rules.Context, p: rules.PlacementDecision) -> Reason:
    if p.fallback is not None:
        return "DEFAULT"  # the default forced (no rules, an error, a deadline): `fallback` says
    if p.experiment is not None:
        return "SPLIT"
    if p.rule is not None:
        return "TARGETING_MATCH"
    if engine is not None and engine.is_static(ctx.site, p.placement, ctx.locale):
        return "STATIC"
    return "DEFAULT"


_CODES: dict[str, ErrorCode] = {
    "PARSE_ERROR": "PARSE_ERROR",
    "TARGETING_KEY_MISSING": "TARGETING_KEY_MISSING",
    "INVALID_CONTEXT": "INVALID_CONTEXT",
}


def _code(code: str) -> ErrorCode:
    return _CODES.get(code, "GENERAL")


def _matches(header: bytes, tag: bytes) -> bool:
    """RFC 9110 If-None-Match: `*`, or a list of tags compared weakly."""
    for candidate in header.split(b","):
        candidate = candidate.strip()
        if candidate == b"*" or candidate.removeprefix(b"W/") == tag:
            return True
    return False


async def _send(send: Send, status: int, headers: Headers, body: bytes) -> None:
    if status != 304:  # a 304 has no body, and its length would be the 200's
        headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _count(state: Worker, route: str, status: int, started: float) -> None:
    state.metrics.responses.inc((route, str(status)))
    state.metrics.request_seconds.observe((route,), time.perf_counter() - started)
