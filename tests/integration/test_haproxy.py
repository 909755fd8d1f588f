"""HAProxy (deploy/haproxy/, a Lua auth-request action) → edgeside → origin, all real processes:
the checks every auth-request proxy passes (authproxy.ProxySuite), and HAProxy's config check."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.proxies import DEPLOY
from tests.conftest import require_binary

from . import authproxy

pytestmark = pytest.mark.integration

HAPROXY_DIR = DEPLOY / "haproxy"


@pytest.fixture(scope="session")
def haproxy_bin() -> str:
    return require_binary("haproxy")


def _env(work: Path, port: int, upstream: str, origin: str) -> dict[str, str]:
    return {
        "EDGESIDE_HAPROXY_BIND": f"127.0.0.1:{port}",
        "EDGESIDE_UPSTREAM": upstream,
        "EDGESIDE_ORIGIN": origin,
    }


@pytest.fixture(scope="module")
def start_proxy(haproxy_bin: str) -> authproxy.StartProxy:
    # -db: foreground, no daemon; -C: lua-load edgeside.lua is relative to deploy/haproxy.
    argv = [haproxy_bin, "-db", "-C", str(HAPROXY_DIR), "-f", "haproxy.cfg"]
    return authproxy.starter("haproxy", argv, _env)


class TestHAProxy(authproxy.ProxySuite):
    name = "haproxy"
    # HAProxy refuses a bare CR or a NUL in a header (400); the rest is served.
    refused = frozenset({"bare-cr", "nul"})


def test_config_passes_haproxy_c(haproxy_bin: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [haproxy_bin, "-c", "-C", str(HAPROXY_DIR), "-f", "haproxy.cfg"],
        env=_env(tmp_path, 1, "127.0.0.1:2", "127.0.0.1:3"),
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # No warning either: HAProxy warns about what it silently ignores or will stop accepting.
    assert "WARNING" not in result.stdout + result.stderr, result.stdout + result.stderr
