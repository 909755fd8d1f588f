"""The quick start as a new user meets it: every command `edgeside serve` prints works as printed,
against a real server; without EDGESIDE_ADMIN_TOKEN the banner shows a token made for the run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.procs import free_port, process, wait_http

pytestmark = pytest.mark.integration


def _check(command: str, output: str) -> None:
    """What each printed command must answer."""
    if "/v1/edge" in command:
        assert output.startswith("HTTP/1.1 204"), output[:200]
        assert "x-edge-decision: home_hero=" in output
    elif "explain=1" in command:
        body = json.loads(output)
        assert "error" not in body and body["trace"], body
        segments = [t for t in body["trace"] if t["kind"] == "segment"]
        assert segments and all(t["conditions"] for t in segments)
    elif "/v1/decide" in command:
        body = json.loads(output)
        assert "error" not in body and body["items"], body
    elif "/v1/fragments" in command:
        assert output.strip().startswith("<") and '"error"' not in output, output[:200]
    else:  # readyz ; metrics | head
        assert '"ready":true' in output and "# HELP" in output, output[:300]


@pytest.mark.parametrize("token", [None, "quickstart-secret-token-77"])
def test_every_printed_command_works(demo_built: Path, tmp_path: Path, token: str | None) -> None:
    data = tmp_path / "data"
    subprocess.run(["cp", "-a", str(demo_built), str(data)], check=True)
    port = free_port()
    # An empty EDGESIDE_ADMIN_TOKEN is no token (and overrides one in the test's environment).
    env = {"EDGESIDE_ADMIN_TOKEN": token or ""}
    argv = [sys.executable, "-m", "server.cli", "serve", "--data", str(data), "--port", str(port)]
    log = tmp_path / "serve.log"
    with process(argv, log=log, env=env) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/readyz", proc=proc, log=log)
        banner = log.read_text()
        commands = [line.strip() for line in banner.splitlines() if line.startswith("  curl ")]
        assert len(commands) == 7, banner
        assert f"Console: {url}/console" in banner
        assert f"Decision log: {data / 'logs'}" in banner
        if token is None:
            generated = re.search(r"admin token: (\S+) — generated for this run", banner)
            assert generated, banner
            assert f"Bearer {generated.group(1)}" in banner
        else:
            assert token not in banner, "a token from the environment is a secret: not printed"
        for command in commands:
            run = subprocess.run(
                ["bash", "-c", command],
                capture_output=True,
                text=True,
                timeout=30,
                env={**os.environ, **env},
                check=False,
            )
            assert run.returncode == 0, (command, run.stderr)
            _check(command, run.stdout.replace("\r\n", "\n"))
        # The decision log is on by default, where the banner says.
        deadline = time.monotonic() + 5
        while not list((data / "logs").glob("decisions-*.ndjson")):
            assert time.monotonic() < deadline, "no decision log after the quick start"
            time.sleep(0.1)
