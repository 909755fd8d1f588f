"""The distribution as a user gets it: build the wheel, install it into a fresh venv with the locked
dependencies, and run the installed `edgeside` — `--version`, then the whole production path with
the demo shop: build signed snapshots from the demo exports, serve an empty data directory, push
them, and answer `/v1/edge` once `/readyz` says ready.

Nothing here may come from the checkout: the commands run from a directory outside it with
PYTHONPATH unset, and the wheel is built from a copy of the sources (a `build/` directory left in
the checkout by an earlier build could otherwise ship modules that no longer exist).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest

from bench.procs import free_port, process, wait_http

from .helpers import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# What a wheel is built from (pyproject.toml names README.md as the long description).
SOURCES = ("pyproject.toml", "README.md", "server", "rules", "snapshots", "bench")
TOKEN = "packaging-test-admin-token"
SIGNING_KEY = "packaging-test-signing-key"


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> str:
    result = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=timeout
    )
    assert result.returncode == 0, (argv, result.stdout[-3000:], result.stderr[-3000:])
    return result.stdout


def test_wheel_installs_and_serves_the_demo(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "results")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=ignore)
        else:
            shutil.copy2(REPO / name, src / name)
    # Outside the checkout, no PYTHONPATH, no settings from the caller's environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "EDGESIDE_"))}
    env.pop("VIRTUAL_ENV", None)
    outside = tmp_path / "elsewhere"
    outside.mkdir()

    venv = tmp_path / "venv"
    # No pip inside the new venv (ensurepip costs more than the rest of the set-up): the test's
    # own pip installs into it with --python.
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], outside, env, 120)
    py, edgeside = str(venv / "bin" / "python"), str(venv / "bin" / "edgeside")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    dist = tmp_path / "dist"
    # Built with the locked setuptools of the test's own venv: no index needed, the same backend
    # every run (an isolated build would fetch the newest setuptools).
    build = [*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)]
    _run(build, outside, env, 300)
    (wheel,) = dist.glob("edgeside-*.whl")
    # The lock as constraints: exactly the locked versions of what the wheel depends on, and
    # nothing else of the lock (dev tools, benchmark peers). The [builds] extra because this test
    # builds the demo snapshots with the installed commands (an edge node that only serves pushed
    # snapshots needs no extra).
    lock = str(REPO / "requirements.lock")
    install = [
        *pip,
        "--python",
        py,
        "install",
        "-q",
        "--no-compile",
        "-c",
        lock,
        f"{wheel}[builds]",
    ]
    _run(install, outside, env, 300)

    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert _run([edgeside, "--version"], outside, env, 60).strip() == f"edgeside {version}"
    where = _run(
        [py, "-c", "import server, rules, snapshots; print(server.__file__)"], outside, env, 60
    )
    assert Path(where.strip()).is_relative_to(venv), where

    # Build the demo's snapshots with the installed commands, signed.
    demo, built = REPO / "demo", tmp_path / "built"
    signed = {**env, "EDGESIDE_SIGNING_KEY": SIGNING_KEY}
    for kind in ("profiles", "content"):
        inputs = [str(p) for p in sorted((demo / kind).glob("*.ndjson"))]
        _run(
            [
                edgeside,
                "snapshot",
                "build",
                "--kind",
                kind,
                "--input",
                *inputs,
                "--config",
                str(demo / f"{kind}.yaml"),
                "--out",
                str(built / kind),
            ],
            outside,
            signed,
            120,
        )
    _run(
        [edgeside, "rules", "build", str(demo / "rules.yaml"), "--out", str(built / "rules")],
        outside,
        signed,
        120,
    )

    # Serve an empty data directory (as the container and the systemd unit do), then push.
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    data.mkdir()
    serving = {**signed, "EDGESIDE_ADMIN_TOKEN": TOKEN, "EDGESIDE_LOG_LEVEL": "warning"}
    argv = [edgeside, "serve", "--host", "127.0.0.1", "--port", str(port), "--data", str(data)]
    log = tmp_path / "serve.log"
    with process(argv, log=log, env=serving, cwd=outside) as proc:
        wait_http(url + "/healthz", proc=proc, log=log, timeout=60)
        assert httpx.get(url + "/readyz", timeout=5).status_code == 503  # nothing to serve yet
        for kind in ("profiles", "content", "rules"):
            _run(
                [edgeside, "snapshot", "push", str(built / kind), "--to", url, "--token", TOKEN],
                outside,
                env,
                120,
            )
        wait_http(url + "/readyz", proc=proc, log=log, timeout=30)
        ready = httpx.get(url + "/readyz", timeout=5).json()
        assert ready["ready"] is True and ready["signed"] is True, ready

        def edge(cookie: str | None) -> httpx.Headers:
            headers = {"X-Original-URI": "/", "X-Placements": "home_hero", "X-Site": "shop-fr"}
            if cookie:
                headers["Cookie"] = f"edgeside_id={cookie}"
            response = httpx.get(url + "/v1/edge", headers=headers, timeout=5)
            assert response.status_code == 204, response.text
            return response.headers

        alice, anonymous = edge("c-alice"), edge(None)
    for answer in (alice, anonymous):
        assert "x-edge-fallback" not in answer, answer
        assert answer["x-edge-decision"].startswith("home_hero="), answer
    # A known visitor is personalised by the pushed profiles: not the anonymous decision.
    assert alice["x-edge-key"] != anonymous["x-edge-key"]
    assert alice["x-edge-segments"], alice
