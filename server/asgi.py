"""Raw ASGI helpers for the hot routes: no Request/Response objects, headers as prepared bytes."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, TypeVar
from urllib.parse import parse_qs

import msgspec

from .metrics import Metrics
from .schemas import ErrorBody, ErrorDetail

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]
T = TypeVar("T")
S = TypeVar("S")

JSON_HEADERS: Headers = [(b"content-type", b"application/json")]
_error_encoder = msgspec.json.Encoder()

# Decision headers go back into a proxy: only these bytes, whatever a rules file or request held.
_UNSAFE_HEADER_BYTES = re.compile(rb"[^A-Za-z0-9_.:;=,/+-]")
_FIELD_IN_MESSAGE = re.compile(r" - at `([^`]*)`$")


def header_value(text: str) -> bytes:
    """Header-safe bytes: anything outside a conservative set becomes `_` (no CR/LF, no quotes)."""
    raw = text.encode("utf-8", "replace")
    return _UNSAFE_HEADER_BYTES.sub(b"_", raw)


# What may stand in a header value on the wire (RFC 9110 field-value: visible ASCII, space, tab;
# no CR, LF, NUL or other control byte). Looser than `header_value`'s output, so it also admits
# headers we write ourselves (`content-type: text/html; charset=utf-8`, cache-control).
_HEADER_WIRE_BYTES = re.compile(rb"[\t\x20-\x7e]*")
_HEADER_NAME_BYTES = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def header_safe(name: bytes, value: bytes) -> bool:
    """True if a header line `name: value` can be written as is: a token name and a value with
    no control byte. The protocol shortcut writes nothing that fails this (edge/protocol.py)."""
    return (
        _HEADER_NAME_BYTES.fullmatch(name) is not None
        and _HEADER_WIRE_BYTES.fullmatch(value) is not None
    )


def header_lines(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """`name: value\r\n` lines of `headers` as written on the wire, or None if one fails
    `header_safe` (such an answer is left to uvicorn, which refuses it the same way)."""
    out = []
    for name, value in headers:
        if not header_safe(name, value):
            return None
        out.append(name + b": " + value + b"\r\n")
    return b"".join(out)


def error_body(code: str, message: str, field: str | None = None) -> bytes:
    return _error_encoder.encode(ErrorBody(ErrorDetail(code=code, message=message, field=field)))


def validation_error_body(exc: msgspec.ValidationError, prefix: str = "") -> bytes:
    """msgspec ends its message with `` - at `$.visitor.id` ``: that path becomes the field."""
    message = str(exc)
    match = _FIELD_IN_MESSAGE.search(message)
    field = match.group(1) if match else None
    return error_body("invalid_request", prefix + message, field)


async def send_response(send: Send, status: int, headers: Headers, body: bytes = b"") -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_error(
    send: Send, status: int, code: str, message: str, field: str | None = None
) -> None:
    await send_response(send, status, JSON_HEADERS, error_body(code, message, field))


class BodyTooLarge(Exception):
    pass


class Refused(Exception):
    """A request answered with a 4xx before any work: the status and the JSON error body."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


async def read_json_body(
    scope: Scope, receive: Receive, headers: dict[bytes, bytes], limit: int
) -> bytes:
    """The raw body of a `POST` with `Content-Type: application/json`, at most `limit` bytes."""
    check_json_request(scope, headers, limit)
    try:
        return await read_body(receive, limit)
    except BodyTooLarge:
        raise _too_large(limit) from None


def check_json_request(scope: Scope, headers: dict[bytes, bytes], limit: int) -> None:
    """What `read_json_body` refuses before reading: not a `POST` (405), not JSON (415), a
    declared length over `limit` (413)."""
    if scope["method"] != "POST":
        raise Refused(405, error_body("method_not_allowed", "use POST with a JSON body"))
    content_type = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
    if content_type != b"application/json":
        raise Refused(
            415,
            error_body("unsupported_media_type", "send the body as Content-Type: application/json"),
        )
    declared = content_length(headers.get(b"content-length"))
    if declared is not None and declared > limit:
        raise _too_large(limit)


# A declared length with more significant digits than this is larger than any limit here.
_LENGTH_DIGITS = 18


def content_length(value: bytes | str | None) -> int | None:
    """A declared `Content-Length` as a number; None if absent or not ASCII digits. Leading
    zeros are allowed, any number of them (HTTP parsers accept them); a value too long for
    `int()` — it refuses strings of more than 4 300 digits — reads as larger than any limit
    (2^64), never as an error: the header is the caller's text."""
    if value is None:
        return None
    raw = value.encode("latin-1", "replace") if isinstance(value, str) else value
    if not (raw.isascii() and raw.isdigit()):
        return None
    digits = raw.lstrip(b"0")
    return int(digits or b"0") if len(digits) <= _LENGTH_DIGITS else 1 << 64


def _too_large(limit: int) -> Refused:
    return Refused(413, error_body("body_too_large", f"the body is over {limit} bytes"))


def decode_json(decode: Callable[[bytes], T], raw: bytes) -> T:
    """Decode a body with a prepared msgspec decoder; a bad body becomes a `Refused` 400/422."""
    try:
        return decode(raw)
    except msgspec.ValidationError as exc:
        raise Refused(422, validation_error_body(exc)) from None
    except msgspec.DecodeError as exc:
        raise Refused(
            400, error_body("malformed_json", f"the body is not valid JSON: {exc}")
        ) from None
    except UnicodeDecodeError:
        raise Refused(400, error_body("malformed_json", "the body is not valid UTF-8")) from None


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body, refusing (before buffering more) anything over `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def query_params(scope: Scope) -> dict[str, list[str]]:
    """The query string's parameters; percent-decoding only where there is something to decode."""
    raw: bytes = scope.get("query_string", b"")
    if not raw:
        return {}
    text = raw.decode("latin-1")
    if "%" in text or "+" in text:
        return parse_qs(text, keep_blank_values=False, max_num_fields=256)
    params: dict[str, list[str]] = {}
    for pair in text.split("&", 256):
        name, _, value = pair.partition("=")
        if value:
            params.setdefault(name, []).append(value)
    return params


# A JSON route's handler: (its state, the scope, receive) -> (status, body).
JSONHandler = Callable[[S, Scope, Receive], Awaitable[tuple[int, bytes]]]


async def answer_json(
    route: str,
    handle: JSONHandler[S],
    state: S,
    metrics: Metrics,
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    """Run a JSON route's handler (a `Refused` becomes its 4xx) and send and count its answer."""
    started = time.perf_counter()
    try:
        status, body = await handle(state, scope, receive)
    except Refused as refused:
        status, body = refused.status, refused.body
    await send_response(send, status, JSON_HEADERS, body)
    count_answer(metrics, route, status, started)


def count_answer(metrics: Metrics, route: str, status: int, started: float) -> None:
    """A JSON route's answer in the response and latency metrics (`started`: perf_counter)."""
    metrics.responses.inc((route, str(status)))
    metrics.request_seconds.observe((route,), time.perf_counter() - started)
