"""Shared fixtures. Integration tests skip only when a binary is missing and
EDGESIDE_REQUIRE_INTEGRATION is unset (SPEC §3); CI sets it, so there they run or fail."""

from __future__ import annotations

import os
import shutil
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx
import pytest

# Servers the tests start give a decision 2 s, not 20 ms: the tests compare decisions and keys
# exactly, and on a loaded CI machine (load 20-40 on 2 cores) a 20 ms overrun turned one into
# its deadline fallback. The deadline itself is tested with its own budget
# (tests/server/decide/test_service.py).
os.environ.setdefault("EDGESIDE_TIME_BUDGET_MS", "2000")


def require_binary(name: str) -> str:
    """Path of an external program the test needs, or a skip (locally) / failure (in CI)."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/local/sbin/{name}") if os.path.exists(p)), None
    )
    if path is None:
        if os.environ.get("EDGESIDE_REQUIRE_INTEGRATION"):
            pytest.fail(f"{name} is required (EDGESIDE_REQUIRE_INTEGRATION is set), not installed")
        pytest.skip(f"{name} is not installed; EDGESIDE_REQUIRE_INTEGRATION=1 makes this fail")
    return path


class _KeepNoCookies(DefaultCookiePolicy):
    def set_ok(self, cookie: object, request: object) -> bool:
        return False


def fresh_client(**options: Any) -> httpx.Client:
    """A client that sends what `httpx.get` sends, without building a client (and its TLS
    context: ~15 ms of CPU quiet, 66 ms at load 12, against 0.8 ms a request) per request: no
    keep-alive, so every request is its own connection, and no cookie kept from an answer."""
    return httpx.Client(
        limits=httpx.Limits(max_keepalive_connections=0),
        cookies=CookieJar(policy=_KeepNoCookies()),
        **options,
    )
