"""Broker credentials apart from the URL (EDGESIDE_FLEET_BROKER_USER/_PASSWORD, _TOKEN, _TOKEN_FILE)
against a real `nats-server` that demands them: right ones join, wrong ones leave the node serving
alone with a readiness detail that says the broker refused them — and no secret in any log line or
message. The URL form (`nats://user:pw@host`) keeps working."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from bench.brokers import Nats, nats_server
from server.config import FleetSettings
from server.fleet.link import (
    PASSWORD_ENV,
    TOKEN_ENV,
    TOKEN_FILE_ENV,
    USER_ENV,
    BrokerAuthError,
    BrokerLink,
    broker_auth,
    shown,
)

from .fleetkit import CART_DECIDE, HTTP, node_config, start_all, wait_for

pytestmark = pytest.mark.integration

USER, PASSWORD, TOKEN = "edge", "pw-Zq81-never-logged", "tok-Xk42-never-logged"


@pytest.fixture(scope="module")
def locked_broker(nats_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nats]:
    """A broker that wants a user and password."""
    work = tmp_path_factory.mktemp("nats-user")
    with nats_server(nats_bin, work, ("--user", USER, "--pass", PASSWORD)) as server:
        yield server


@pytest.fixture(scope="module")
def token_broker(nats_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nats]:
    work = tmp_path_factory.mktemp("nats-token")
    with nats_server(nats_bin, work, ("--auth", TOKEN)) as server:
        yield server


def test_credentials_from_the_environment_are_checked_before_use(tmp_path: Path) -> None:
    assert broker_auth({}).options() == {}
    assert broker_auth({USER_ENV: "u", PASSWORD_ENV: "p"}).options() == {
        "user": "u",
        "password": "p",
    }
    assert broker_auth({TOKEN_ENV: "t"}).options() == {"token": "t"}
    token_file = tmp_path / "token"
    token_file.write_text("  from-a-file\n")
    assert broker_auth({TOKEN_FILE_ENV: str(token_file)}).options() == {"token": "from-a-file"}
    refused = [
        {USER_ENV: "u"},
        {PASSWORD_ENV: "p"},
        {USER_ENV: "u", PASSWORD_ENV: "p", TOKEN_ENV: "t"},
        {TOKEN_ENV: "t", TOKEN_FILE_ENV: str(token_file)},
        {TOKEN_FILE_ENV: str(tmp_path / "missing")},
    ]
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "huge").write_bytes(b"x" * 5000)
    refused += [{TOKEN_FILE_ENV: str(tmp_path / "empty")}, {TOKEN_FILE_ENV: str(tmp_path / "huge")}]
    for env in refused:
        with pytest.raises(BrokerAuthError) as caught:
            broker_auth(env)
        assert "EDGESIDE_FLEET_BROKER_" in str(caught.value), env
    secret = broker_auth({USER_ENV: "u", PASSWORD_ENV: "p-secret"})
    assert "p-secret" not in repr(secret) and "p-secret" not in secret.given
    assert shown("nats://u:p-secret@127.0.0.1:4222, nats://h2:4223") == (
        "nats://127.0.0.1:4222,nats://h2:4223"
    )


async def _link(url: str, environ: dict[str, str], up: bool, said: str = "") -> str | None:
    """Run a link for a moment: connected (`up`), or down with a note that says `said`, which
    is returned (whatever it says after 20 s). A refused token can reach the node as a reset
    before the broker's -ERR arrives; the link's next attempt then reads the refusal."""
    link = BrokerLink(FleetSettings(broker=url, node="t"), "t", environ)
    task = asyncio.create_task(link.run())

    def settled() -> bool:
        if up:
            return link.up
        return not link.up and bool(link.last_error) and said in (link.last_error or "")

    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(20.0):
                while not settled():
                    await asyncio.sleep(0.05)
        return link.note()
    finally:
        task.cancel()
        await link.close()


def test_a_token_or_token_file_joins_and_a_wrong_one_is_said_so(
    token_broker: Nats, tmp_path: Path
) -> None:
    assert asyncio.run(_link(token_broker.url, {TOKEN_ENV: TOKEN}, up=True)) is None
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    assert asyncio.run(_link(token_broker.url, {TOKEN_FILE_ENV: str(token_file)}, up=True)) is None
    refused = "refused this node's credentials"
    note = asyncio.run(_link(token_broker.url, {TOKEN_ENV: "not-the-token"}, False, refused))
    assert note is not None and "refused this node's credentials" in note, note
    assert TOKEN_ENV in note and "not-the-token" not in note
    # Given apart from the URL, they win over credentials written in it.
    url = token_broker.url.replace("nats://", "nats://stale-token@")
    assert asyncio.run(_link(url, {TOKEN_ENV: TOKEN}, up=True)) is None
    # A misconfiguration is not even tried: the note names the variables.
    note = asyncio.run(_link(token_broker.url, {USER_ENV: "only-a-user"}, up=False))
    assert note is not None and PASSWORD_ENV in note, note


def _fleet_notes(url: str) -> list[str]:
    answer = HTTP.get(url + "/readyz", timeout=5.0)
    assert answer.status_code == 200, answer.text  # ready: the node serves without the broker
    return [w for w in answer.json()["warnings"] if w.startswith("fleet:")]


def test_nodes_join_with_user_and_password_and_a_wrong_one_serves_alone(
    locked_broker: Nats, node_data: Callable[[str], Path]
) -> None:
    url = locked_broker.url
    good = {USER_ENV: USER, PASSWORD_ENV: PASSWORD}
    wrong = {USER_ENV: USER, PASSWORD_ENV: "wrong-" + PASSWORD}
    assert asyncio.run(_link(url, good, up=True)) is None
    # Two real nodes: one with the credentials in its URL, one with wrong ones in its environment.
    in_url = url.replace("nats://", f"nats://{USER}:{PASSWORD}@")
    specs = []
    for name, broker, env in [("url", in_url, {}), ("wrong", url, wrong)]:
        data = node_data(name)
        config = node_config(data / "fleet.yaml", broker, name)
        specs.append((data, ["--config", str(config)], env))
    with ExitStack() as stack:
        by_url, refused = start_all(stack, specs)
        wait_for(lambda: not _fleet_notes(by_url.url), timeout=20.0)
        wait_for(lambda: any("refused" in w for w in _fleet_notes(refused.url)), timeout=20.0)
        [note] = _fleet_notes(refused.url)
        assert "refused this node's credentials" in note and repr(USER) in note, note
        # It serves from its local snapshots and store all the same.
        answer = HTTP.post(refused.url + "/v1/decide", json=CART_DECIDE, timeout=5.0)
        assert answer.status_code == 200, answer.text
        event = {"type": "view", "visitor": {"ids": {"cookie": "c-alice"}}}
        answer = HTTP.post(refused.url + "/v1/events", json={"events": [event]}, timeout=5.0)
        assert answer.status_code == 202, answer.text
        # `edgeside fleet status` takes its credentials the same way.
        status = [sys.executable, "-m", "server.cli", "fleet", "status", "--broker", url]
        wait_for(lambda: _fleet_status(status, good).returncode == 0, timeout=20.0)
        assert "1 nodes; converged" in _fleet_status(status, good).stdout
        done = _fleet_status(status, wrong)
        assert done.returncode == 2 and "refused" in done.stderr, done.stderr
        assert PASSWORD not in done.stderr
        logs = [node.log.read_text() for node in (by_url, refused)]
    assert f"connected to {url}" in logs[0], logs[0]  # shown without the URL's credentials
    for text in logs:
        assert PASSWORD not in text  # nor the wrong one, which contains it


def _fleet_status(argv: list[str], extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=_env(extra), capture_output=True, text=True, timeout=30, check=False
    )


def _env(extra: dict[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("EDGESIDE_FLEET_BROKER")}
    return {**base, **extra}
