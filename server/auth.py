"""Scoped credentials (SPEC §6 Trust, issue 14): who may call what, checked in one place.

A caller shows a bearer token (`Authorization: Bearer <token>`); each token grants scopes:

    push      snapshot admin: /v1/admin/… (push, activate, rollback, status)
    profiles  reading personal and catalogue data: GET /v1/profiles/{id}, GET /v1/content/{id}
    decide    naming a visitor by a non-cookie identifier (server-to-server callers: /v1/decide
              bodies with `customer_id`, `X-Visitor-Id`, events for other ids, consent grants)
    explain   the decision trace (`?explain=1`) and the console
    metrics   GET /metrics — optional: with no metrics token configured, /metrics stays public

Configuration comes from the environment only, as sha256 hex digests of the tokens, never the
tokens themselves (a config file, `ps` or a log line then holds nothing a caller can replay):

    EDGESIDE_TOKENS_PUSH=<sha256 hex>,<sha256 hex>   several per scope: rotate by adding the new
    EDGESIDE_TOKENS_DECIDE=<sha256 hex>              digest, moving callers, removing the old one
    EDGESIDE_ADMIN_TOKEN=<token>                     the plain token of old: every scope

(`printf %s "$TOKEN" | sha256sum` gives a digest.) No digest configured for a scope means no
access to it, whatever is sent. A presented token is hashed once and compared with every
configured digest by `hmac.compare_digest`, without stopping at the first match, so timing tells
nothing about which digest or how many bytes matched.

Call `require(request_or_headers, scope)`; it returns an `AuthError` (answer it: `status`,
`body`) or None when the caller holds the scope. A token in the query string (`?token=…`,
`?access_token=…`) is refused: query strings end up in access logs and proxy caches.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast
from urllib.parse import parse_qsl

from .asgi import error_body

SCOPES = ("push", "profiles", "decide", "explain", "metrics")
# Scopes whose routes stay public while no token is configured for them.
OPTIONAL = frozenset({"metrics"})
ENV_PREFIX = "EDGESIDE_TOKENS_"
ADMIN_ENV = "EDGESIDE_ADMIN_TOKEN"
_DIGEST = re.compile(r"[0-9a-f]{64}")
# Query parameters that look like a credential: refused wherever they appear.
_QUERY_TOKENS = frozenset({"token", "access_token", "auth", "authorization", "api_key", "apikey"})


class ConfigError(Exception):
    """A malformed EDGESIDE_TOKENS_* variable: refused at start-up, never half-applied."""


@dataclass(frozen=True)
class AuthError:
    """What to answer a caller who may not: 401 (no or unknown credential) or 403 (a valid
    token without `scope`; the message names the missing scope)."""

    status: int
    code: str
    message: str
    scope: str

    @property
    def body(self) -> bytes:
        return error_body(self.code, self.message, self.scope)

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"content-type", b"application/json"),
            (b"www-authenticate", b'Bearer scope="' + self.scope.encode() + b'"'),
        ]


@dataclass(frozen=True)
class Credentials:
    """The configured digests, by scope (bytes of the hex digest)."""

    digests: Mapping[str, tuple[bytes, ...]]
    # Scopes with their own EDGESIDE_TOKENS_* digests. An optional scope (metrics) is guarded only
    # then: the admin token alone does not close /metrics to Prometheus.
    explicit: frozenset[str] = frozenset()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Credentials:
        env = os.environ if environ is None else environ
        digests: dict[str, list[bytes]] = {scope: [] for scope in SCOPES}
        for scope in SCOPES:
            raw = env.get(ENV_PREFIX + scope.upper(), "")
            for item in raw.replace(" ", ",").split(","):
                item = item.strip().lower()
                if not item:
                    continue
                if _DIGEST.fullmatch(item) is None:
                    raise ConfigError(
                        f"{ENV_PREFIX}{scope.upper()}: expected comma-separated sha256 hex digests "
                        "of the tokens (printf %s TOKEN | sha256sum), not the tokens themselves"
                    )
                digests[scope].append(item.encode())
        unknown = sorted(
            k
            for k in env
            if k.startswith(ENV_PREFIX) and k[len(ENV_PREFIX) :].lower() not in SCOPES
        )
        if unknown:
            raise ConfigError(f"{unknown}: unknown token scopes; the scopes are {list(SCOPES)}")
        explicit = frozenset(scope for scope, d in digests.items() if d)
        admin = env.get(ADMIN_ENV, "")
        if admin:
            for scope in SCOPES:
                digests[scope].append(digest(admin.encode()).encode())
        return cls({scope: tuple(d) for scope, d in digests.items()}, explicit)

    def configured(self, scope: str) -> bool:
        return bool(self.digests.get(scope))

    def scopes_of(self, token: bytes) -> frozenset[str]:
        """Every scope `token` grants, compared in constant time against every digest."""
        presented = digest(token).encode()
        granted: set[str] = set()
        for scope, digests in self.digests.items():
            hit = False
            for d in digests:
                hit |= hmac.compare_digest(presented, d)
            if hit:
                granted.add(scope)
        return frozenset(granted)


def digest(token: bytes) -> str:
    """The sha256 hex digest that EDGESIDE_TOKENS_* holds for `token`."""
    return hashlib.sha256(token).hexdigest()


_credentials: Credentials | None = None


def configure(credentials: Credentials | None) -> None:
    """Set this process's credentials (the app does it at start-up; tests may reset them)."""
    global _credentials
    _credentials = credentials


def credentials() -> Credentials:
    global _credentials
    if _credentials is None:
        _credentials = Credentials.from_environ()
    return _credentials


class _HasScope(Protocol):
    """A starlette `Request` (or anything with an ASGI `scope`)."""

    @property
    def scope(self) -> Any: ...


Source = _HasScope | Mapping[str, Any] | Mapping[bytes, bytes] | Iterable[tuple[bytes, bytes]]


def _headers_and_query(source: Source) -> tuple[Mapping[bytes, bytes], bytes]:
    scope: Any = getattr(source, "scope", None)
    if scope is None and isinstance(source, Mapping) and "type" in source:
        scope = source  # an ASGI scope
    if scope is not None:
        return dict(scope.get("headers", [])), scope.get("query_string", b"") or b""
    if isinstance(source, Mapping):
        return cast(Mapping[bytes, bytes], source), b""
    return dict(cast(Iterable[tuple[bytes, bytes]], source)), b""


def require(source: Source, scope: str, creds: Credentials | None = None) -> AuthError | None:
    """None if the caller of `source` (a starlette Request, an ASGI scope, or the request's
    headers as `{name: value}` bytes or ASGI header pairs) holds `scope`; else the refusal."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; one of {SCOPES}")
    creds = credentials() if creds is None else creds
    headers, query = _headers_and_query(source)
    if query and token_in_query(query):
        return AuthError(
            401,
            "token_in_query",
            "credentials in the query string are refused (they end up in logs and caches); "
            "send `Authorization: Bearer <token>`",
            scope,
        )
    if scope in OPTIONAL and scope not in creds.explicit:
        return None
    value = headers.get(b"authorization", b"")
    kind, _, token = value.partition(b" ")
    token = token.strip()
    if kind.lower() != b"bearer" or not token:
        return AuthError(
            401, "unauthorized", f"this route needs a bearer token with the `{scope}` scope", scope
        )
    granted = creds.scopes_of(token)
    if not granted:
        return AuthError(
            401, "unauthorized", f"unknown token; this route needs the `{scope}` scope", scope
        )
    if scope not in granted:
        return AuthError(
            403, "forbidden", f"this token lacks the `{scope}` scope this route needs", scope
        )
    return None


def token_in_query(query: bytes) -> bool:
    try:
        text = query.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        return False
    return any(k.lower() in _QUERY_TOKENS for k, _ in parse_qsl(text, keep_blank_values=True))
