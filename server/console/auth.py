"""Who may use the console: the token check, the session cookie and the cross-site guards.

- `token_ok` is the one place that decides whether a presented token grants the console. Today it
  is the admin token; scoped tokens (issue 14: a `console` scope) replace this one function.
- A session is a signed cookie, not server state, so every worker accepts it: the cookie holds an
  expiry and a nonce, MACed with a key derived from the admin token (changing the token ends every
  session). `HttpOnly` keeps it from scripts, `SameSite=Strict` from other sites' requests.
- A change (any non-GET) also needs the session's CSRF token in `X-CSRF-Token` — a value only a
  page of ours can read — and is refused when the browser says it comes from another site
  (`Sec-Fetch-Site`, `Origin`).
- A wrong, expired or missing credential is a 401 that says no more than that.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

SESSION_COOKIE = "edgeside_console"
SESSION_TTL_S = 8 * 3600
CSRF_HEADER = "x-csrf-token"
# Bounds on what is parsed at all: a cookie or token longer than this is simply wrong.
_MAX_CREDENTIAL = 512


def token_ok(admin_token: str, presented: str) -> bool:
    """Whether `presented` grants the console (constant time; no configured token, no access)."""
    if not admin_token or not presented or len(presented) > _MAX_CREDENTIAL:
        return False
    return hmac.compare_digest(presented.encode(), admin_token.encode())


class Sessions:
    """Issues and checks session cookies and their CSRF tokens."""

    def __init__(self, admin_token: str, ttl_s: float = SESSION_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._key = (
            hmac.new(admin_token.encode(), b"edgeside console session", hashlib.sha256).digest()
            if admin_token
            else None
        )

    def _mac(self, text: str) -> str:
        if self._key is None:  # unreachable: no token, no session is ever issued
            raise ValueError("no admin token")
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def issue(self, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + self.ttl_s)
        body = f"{expires}.{secrets.token_urlsafe(16)}"
        return f"{body}.{self._mac(body)}"

    def valid(self, cookie: str, now: float | None = None) -> bool:
        if self._key is None or not cookie or len(cookie) > _MAX_CREDENTIAL:
            return False
        body, _, mac = cookie.rpartition(".")
        expires, _, nonce = body.partition(".")
        if not expires.isdigit() or not nonce:
            return False
        if not hmac.compare_digest(mac, self._mac(body)):
            return False
        return int(expires) > (time.time() if now is None else now)

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
