"""Who may use the console: the token check, the session cookie and the cross-site guards.

- Any token holding the `explain` scope (server/auth.py; the admin token holds every scope) signs
  in. What a session may do is what its token may: promoting a shadow pushes a rules snapshot, so
  it needs the `push` scope too (issue 14) — an explain-only session previews, replays and shadows.
- A session is a signed cookie, not server state, so every worker accepts it: the cookie holds an
  expiry, a nonce and the id of the token's digest, MACed with the console secret — one per
  deployment (`EDGESIDE_CONSOLE_SECRET`; `edgeside serve` makes a random one for its workers when
  none is set), never derived from a token, so it holds with several tokens and across rotations.
  A session's scopes are looked up from its token id at every request: removing a token's digest
  ends its sessions (and only its), a digest added to a scope widens them.
  `HttpOnly` keeps it from scripts, `SameSite=Strict` from other sites' requests.
- A change (any non-GET) also needs the session's CSRF token in `X-CSRF-Token` — a value only a
  page of ours can read — and is refused when the browser says it comes from another site
  (`Sec-Fetch-Site`, `Origin`).
- A wrong, expired or missing credential is a 401 that says no more than that.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable, Mapping

from .. import auth as scoped

SESSION_COOKIE = "edgeside_console"
# The deployment's console secret (hex or any text); `edgeside serve` sets a random one for its
# workers when the operator has not, so sessions end with the server.
SECRET_ENV = "EDGESIDE_CONSOLE_SECRET"  # noqa: S105 - a variable name, not a secret
CONSOLE_SCOPE = "explain"
SESSION_TTL_S = 8 * 3600
CSRF_HEADER = "x-csrf-token"
# Bounds on what is parsed at all: a cookie or token longer than this is simply wrong.
_MAX_CREDENTIAL = 512


def token_scopes(presented: str, creds: scoped.Credentials | None = None) -> frozenset[str]:
    """The scopes `presented` holds (constant time per digest; too long: none)."""
    if not presented or len(presented) > _MAX_CREDENTIAL:
        return frozenset()
    return (creds or scoped.credentials()).scopes_of(presented.encode())


def token_id(presented: str) -> str:
    """A short id of a token's digest: names it in a cookie without revealing the digest."""
    return _digest_id(scoped.digest(presented.encode()).encode())


def _digest_id(digest: bytes) -> str:
    return hashlib.sha256(b"edgeside console token\0" + digest).hexdigest()[:24]


def console_secret(environ: Mapping[str, str] | None = None) -> bytes:
    """The deployment's secret, or a random one for this process alone (a single worker, tests)."""
    value = (os.environ if environ is None else environ).get(SECRET_ENV, "")
    return value.encode() if value else secrets.token_bytes(32)


class Sessions:
    """Issues and checks session cookies and their CSRF tokens."""

    def __init__(
        self,
        secret: bytes,
        ttl_s: float = SESSION_TTL_S,
        credentials: Callable[[], scoped.Credentials] = scoped.credentials,
    ) -> None:
        self.ttl_s = ttl_s
        self._key = hmac.new(secret, b"edgeside console session", hashlib.sha256).digest()
        self._credentials = credentials

    def _mac(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def issue(self, token: str, now: float | None = None) -> str | None:
        """A cookie for a token that holds the console's scope; None for any other."""
        if CONSOLE_SCOPE not in token_scopes(token, self._credentials()):
            return None
        expires = int((time.time() if now is None else now) + self.ttl_s)
        body = f"{expires}.{secrets.token_urlsafe(16)}.{token_id(token)}"
        return f"{body}.{self._mac(body)}"

    def scopes(self, cookie: str, now: float | None = None) -> frozenset[str]:
        """The scopes of a valid session's token as configured now; empty when not valid."""
        if not cookie or len(cookie) > _MAX_CREDENTIAL:
            return frozenset()
        body, _, mac = cookie.rpartition(".")
        parts = body.split(".")
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1] or not parts[2]:
            return frozenset()
        if not hmac.compare_digest(mac, self._mac(body)):
            return frozenset()
        if int(parts[0]) <= (time.time() if now is None else now):
            return frozenset()
        tid = parts[2]
        granted = {
            scope
            for scope, digests in self._credentials().digests.items()
            if any(hmac.compare_digest(_digest_id(d), tid) for d in digests)
        }
        return frozenset(granted) if CONSOLE_SCOPE in granted else frozenset()

    def valid(self, cookie: str, now: float | None = None) -> bool:
        return bool(self.scopes(cookie, now))

    def csrf(self, cookie: str) -> str:
        """The CSRF token of a (valid) session: derived from it, so nothing is stored."""
        return self._mac("csrf:" + cookie)

    def csrf_ok(self, cookie: str, presented: str) -> bool:
        return bool(presented) and hmac.compare_digest(presented, self.csrf(cookie))


def cross_site(headers: Mapping[str, str], scheme: str) -> bool:
    """Whether the browser tells us the request comes from another site (or origin)."""
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return True
    origin = headers.get("origin")
    if origin is not None:
        host = headers.get("host", "")
        return origin != f"{scheme}://{host}"
    return False


def cookie_header(value: str, max_age: int, secure: bool) -> str:
    """The Set-Cookie value: scoped to the console, never readable by scripts or sent cross-site."""
    attrs = [
        f"{SESSION_COOKIE}={value}",
        "Path=/console",
        f"Max-Age={max_age}",
        "HttpOnly",
        "SameSite=Strict",
    ]
    if secure:
        attrs.append("Secure")
    return "; ".join(attrs)
