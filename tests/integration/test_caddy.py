"""Caddy (deploy/caddy/Caddyfile, `forward_auth`) → edgeside → origin, all real processes."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench.procs import Edgeside, edgeside, free_port, process
from bench.proxies import DEPLOY, Running, _wait_listening
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


def start_caddy(caddy_bin: str) -> authproxy.StartProxy:
    @contextmanager
    def start(work: Path, upstream: str, origin: str) -> Iterator[Running]:
        work.mkdir(parents=True, exist_ok=True)
        port = free_port()
        log = work / f"caddy-{port}.log"
        argv = [caddy_bin, "run", "--adapter", "caddyfile", "--config", str(CADDYFILE)]
        env = _env(work, port, upstream, origin)
        with process(argv, log=log, env=env, cwd=work) as proc:
            url = f"http://127.0.0.1:{port}"
            _wait_listening(url, proc, log)
            yield Running(url, port, proc, log)

    return start


@pytest.fixture(scope="module")
def proxy(caddy_bin: str, work: Path, decider: Edgeside, origin: Running) -> Iterator[Running]:
    edge = decider.url.removeprefix("http://")
    with start_caddy(caddy_bin)(work / "caddy", edge, f"127.0.0.1:{origin.port}") as running:
        yield running


@pytest.fixture(scope="module")
def stub(caddy_bin: str, work: Path, origin: Running) -> Iterator[authproxy.Stubbed]:
    with authproxy.stubbed(start_caddy(caddy_bin), work / "caddy-stub", origin) as running:
        yield running


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


def test_known_visitors_get_their_personalised_page(
    proxy: Running, decider: Edgeside, origin: Running
) -> None:
    authproxy.check_personalised(proxy, decider, origin, "/caddy")


def test_site_from_host_and_placements_from_url(
    proxy: Running, decider: Edgeside, origin: Running
) -> None:
    authproxy.check_pages_for_other_sites_and_placements(proxy, decider, origin, "/caddy")


def test_client_cannot_choose_its_decision_or_borrow_a_visitor(
    proxy: Running, decider: Edgeside, origin: Running
) -> None:
    authproxy.check_client_cannot_choose_its_decision(proxy, decider, origin, "/caddy")


def test_callout_carries_only_trusted_inputs(stub: authproxy.Stubbed) -> None:
    authproxy.check_callout_sends_only_trusted_inputs(stub)


@pytest.mark.parametrize("case", sorted(authproxy.INJECTIONS))
def test_injection_attempts_never_reach_the_origin(
    proxy: Running, decider: Edgeside, origin: Running, case: str
) -> None:
    status = authproxy.check_injection(proxy, decider, origin, "/caddy", case)
    # Go's HTTP server refuses a bare CR or a NUL in a header (400); the rest is served.
    assert status == (400 if case in {"bare-cr", "nul"} else 200)


def test_malformed_answers_are_not_trusted(stub: authproxy.Stubbed, origin: Running) -> None:
    authproxy.check_answer_rechecked(stub, origin)


def test_edgeside_stopped_pages_still_served_with_the_fallback(
    caddy_bin: str, cdn_data: Path, tmp_path: Path, origin: Running
) -> None:
    with (
        edgeside(cdn_data, log_dir=tmp_path) as own,
        start_caddy(caddy_bin)(
            tmp_path, own.url.removeprefix("http://"), f"127.0.0.1:{origin.port}"
        ) as proxy,
    ):
        authproxy.check_edgeside_stopped(proxy, own, origin)


@pytest.mark.parametrize("mode", ["404", "500", "403", "slow"])
def test_decider_misbehaving_still_serves_the_page(
    stub: authproxy.Stubbed, origin: Running, mode: str
) -> None:
    authproxy.check_decider_misbehaving(stub, origin, mode)
