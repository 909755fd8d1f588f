"""HAProxy (deploy/haproxy/, a Lua auth-request action) → edgeside → origin, all real processes."""

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

HAPROXY_DIR = DEPLOY / "haproxy"


@pytest.fixture(scope="session")
def haproxy_bin() -> str:
    return require_binary("haproxy")


def _env(bind: str, upstream: str, origin: str) -> dict[str, str]:
    return {
        "EDGESIDE_HAPROXY_BIND": bind,
        "EDGESIDE_UPSTREAM": upstream,
        "EDGESIDE_ORIGIN": origin,
    }


def start_haproxy(haproxy_bin: str) -> authproxy.StartProxy:
    @contextmanager
    def start(work: Path, upstream: str, origin: str) -> Iterator[Running]:
        work.mkdir(parents=True, exist_ok=True)
        port = free_port()
        log = work / f"haproxy-{port}.log"
        # -db: foreground, no daemon; -C: lua-load edgeside.lua is relative to deploy/haproxy.
        argv = [haproxy_bin, "-db", "-C", str(HAPROXY_DIR), "-f", "haproxy.cfg"]
        env = _env(f"127.0.0.1:{port}", upstream, origin)
        with process(argv, log=log, env=env, cwd=work) as proc:
            url = f"http://127.0.0.1:{port}"
            _wait_listening(url, proc, log)
            yield Running(url, port, proc, log)

    return start


@pytest.fixture(scope="module")
def proxy(haproxy_bin: str, work: Path, decider: Edgeside, origin: Running) -> Iterator[Running]:
    edge = decider.url.removeprefix("http://")
    with start_haproxy(haproxy_bin)(work / "haproxy", edge, f"127.0.0.1:{origin.port}") as running:
        yield running


@pytest.fixture(scope="module")
def stub(haproxy_bin: str, work: Path, origin: Running) -> Iterator[authproxy.Stubbed]:
    with authproxy.stubbed(start_haproxy(haproxy_bin), work / "haproxy-stub", origin) as running:
        yield running


def test_config_passes_haproxy_c(haproxy_bin: str) -> None:
    result = subprocess.run(
        [haproxy_bin, "-c", "-C", str(HAPROXY_DIR), "-f", "haproxy.cfg"],
        env=_env("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"),
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # No warning either: HAProxy warns about what it silently ignores or will stop accepting.
    assert "WARNING" not in result.stdout + result.stderr, result.stdout + result.stderr


def test_known_visitors_get_their_personalised_page(
    proxy: Running, decider: Edgeside, origin: Running
) -> None:
    authproxy.check_personalised(proxy, decider, origin, "/haproxy")


def test_site_from_host_and_placements_from_url(
    proxy: Running, decider: Edgeside, origin: Running
) -> None:
    authproxy.check_pages_for_other_sites_and_placements(proxy, decider, origin, "/haproxy")


def test_client_cannot_choose_its_decision_or_borrow_a_visitor(
    proxy: Running, decider: Edgeside, origin: Running
) -> None:
    authproxy.check_client_cannot_choose_its_decision(proxy, decider, origin, "/haproxy")


def test_callout_carries_only_trusted_inputs(stub: authproxy.Stubbed) -> None:
    authproxy.check_callout_sends_only_trusted_inputs(stub)


@pytest.mark.parametrize("case", sorted(authproxy.INJECTIONS))
def test_injection_attempts_never_reach_the_origin(
    proxy: Running, decider: Edgeside, origin: Running, case: str
) -> None:
    status = authproxy.check_injection(proxy, decider, origin, "/haproxy", case)
    # HAProxy refuses a bare CR or a NUL in a header (400); the rest is served.
    assert status == (400 if case in {"bare-cr", "nul"} else 200)


def test_malformed_answers_are_not_trusted(stub: authproxy.Stubbed, origin: Running) -> None:
    authproxy.check_answer_rechecked(stub, origin)


def test_edgeside_stopped_pages_still_served_with_the_fallback(
    haproxy_bin: str, cdn_data: Path, tmp_path: Path, origin: Running
) -> None:
    with (
        edgeside(cdn_data, log_dir=tmp_path) as own,
        start_haproxy(haproxy_bin)(
            tmp_path, own.url.removeprefix("http://"), f"127.0.0.1:{origin.port}"
        ) as proxy,
    ):
        authproxy.check_edgeside_stopped(proxy, own, origin)


@pytest.mark.parametrize("mode", ["404", "500", "403", "slow"])
def test_decider_misbehaving_still_serves_the_page(
    stub: authproxy.Stubbed, origin: Running, mode: str
) -> None:
    authproxy.check_decider_misbehaving(stub, origin, mode)
