"""Caddy (deploy/caddy/Caddyfile, `forward_auth`) → edgeside → origin, all real processes: the
checks every auth-request proxy passes (authproxy.ProxySuite), and Caddy's own config checks."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.proxies import DEPLOY
from tests.conftest import require_binary

from . import authproxy

pytestmark = pytest.mark.integration

CADDYFILE = DEPLOY / "caddy" / "Caddyfile"


@pytest.fixture(scope="session")
def caddy_bin() -> str:
    return require_binary("caddy")


def _env(work: Path, port: int, upstream: str, origin: str) -> dict[str, str]:
    # Caddy keeps state (certificates, autosave) under $HOME / XDG dirs: a private one per run.
    return {
        "HOME": str(work),
        "XDG_DATA_HOME": str(work / "data"),
        "XDG_CONFIG_HOME": str(work / "config"),
        "EDGESIDE_CADDY_PORT": str(port),
        "EDGESIDE_CADDY_BIND": "127.0.0.1",
        "EDGESIDE_UPSTREAM": upstream,
        "EDGESIDE_ORIGIN": origin,
    }


@pytest.fixture(scope="module")
def start_proxy(caddy_bin: str) -> authproxy.StartProxy:
    argv = [caddy_bin, "run", "--adapter", "caddyfile", "--config", str(CADDYFILE)]
    return authproxy.starter("caddy", argv, _env)


class TestCaddy(authproxy.ProxySuite):
    name = "caddy"
    # Go's HTTP server refuses a bare CR or a NUL in a header (400); the rest is served.
    refused = frozenset({"bare-cr", "nul"})


def test_caddyfile_validates(caddy_bin: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [caddy_bin, "validate", "--adapter", "caddyfile", "--config", str(CADDYFILE)],
        env=_env(tmp_path, 1, "127.0.0.1:2", "127.0.0.1:3"),
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    # `caddy fmt` leaves the file as it is: what is committed is what Caddy would write.
    fmt = subprocess.run(
        [caddy_bin, "fmt", str(CADDYFILE)],
        env=_env(tmp_path, 1, "", ""),
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert fmt.stdout == CADDYFILE.read_text()
