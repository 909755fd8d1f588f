"""The distribution as a user gets it: build the wheel, install it into a fresh venv, and run the
installed `edgeside` — `--version`; `edgeside serve` with no `--data`, which builds the demo shop
from the data shipped inside the wheel and serves it; and the whole production path: build signed
snapshots with the installed commands from the installed demo exports, serve an empty data
directory (as the container and the systemd unit do), push them, and answer `/v1/edge` once
`/readyz` says ready.

Nothing here may come from the checkout: the commands run from a directory outside it with
PYTHONPATH unset and HOME elsewhere, and the wheel is built from a copy of the sources (a `build/`
directory left in the checkout by an earlier build could otherwise ship modules that no longer
exist).

What makes it take about a minute instead of several, without proving less about the wheel:
- The wheel is built by calling setuptools' PEP 517 `build_wheel` hook directly — what
  `pip wheel --no-build-isolation` calls, without pip preparing the metadata in a second
  setuptools run first (28 s → 9 s under load).
- The wheel is installed with `--no-deps`, and the fresh venv sees the dependencies the test's
  own venv installed from `requirements.lock` through a `.pth` line naming that site-packages
  directory — a plain path, not a site directory, so the `.pth` files in it (the checkout's
  editable install) are not run. Installing the locked dependencies again (duckdb, pyarrow,
  numpy, scipy…) was 82 s of the old test and proved only that pip can unpack them, which
  `make .venv/.installed` already does from the same lock. What the install must prove about the
  wheel is checked instead: every requirement it declares (with the `[builds]` extra the
  snapshot builds use) is satisfied by the locked versions, and `server` is imported from the
  wheel, with no editable finder anywhere.
- The two servers, the three snapshot builds and the three pushes run side by side.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.procs import free_port, stop, wait_http

from .helpers import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# What a wheel is built from (pyproject.toml names README.md as the long description).
SOURCES = ("pyproject.toml", "README.md", "server", "rules", "snapshots", "bench")
TOKEN = "packaging-test-admin-token"
SIGNING_KEY = "packaging-test-signing-key"

# Run by the fresh venv's interpreter: the installed wheel's requirements (and its [builds]
# extra) against what that interpreter can import, and where `server` and its metadata come from.
CHECK_INSTALL = """
import importlib.metadata as md, json, sys
from packaging.requirements import Requirement
import server
dist = md.distribution("edgeside")
unmet = []
for text in dist.requires or []:
    req = Requirement(text)
    if req.marker is not None and not any(
        req.marker.evaluate({"extra": e}) for e in ("", "builds")
    ):
        continue
    try:
        have = md.version(req.name)
    except md.PackageNotFoundError:
        have = None
    if have is None or not req.specifier.contains(have, prereleases=True):
        unmet.append(f"{text} (have {have})")
print(json.dumps({
    "server": server.__file__,
    "dist": str(dist.locate_file("")),
    "unmet": unmet,
    "requires": len(dist.requires or []),
    "editable": [repr(f) for f in sys.meta_path if "editable" in repr(f).lower()],
}))
"""


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> str:
    result = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=timeout
    )
    assert result.returncode == 0, (argv, result.stdout[-3000:], result.stderr[-3000:])
    return result.stdout


def _started(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finished(procs: list[subprocess.Popen[str]], timeout: float) -> None:
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, (p.args, out[-3000:], err[-3000:])


@contextmanager
def _serving(argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> Iterator[Any]:
    """A server with exactly `env` (bench.procs.process would add the caller's environment)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        stop(proc)


def _edge(url: str, cookie: str | None) -> httpx.Headers:
    headers = {"X-Original-URI": "/", "X-Placements": "home_hero", "X-Site": "shop-fr"}
    if cookie:
        headers["Cookie"] = f"edgeside_id={cookie}"
    response = httpx.get(url + "/v1/edge", headers=headers, timeout=5)
    assert response.status_code == 204, response.text
    return response.headers


def _personalised(url: str) -> None:
    alice, anonymous = _edge(url, "c-alice"), _edge(url, None)
    for answer in (alice, anonymous):
        assert "x-edge-fallback" not in answer, answer
        assert answer["x-edge-decision"].startswith("home_hero="), answer
    # A known visitor is personalised by the profiles: not the anonymous decision.
    assert alice["x-edge-key"] != anonymous["x-edge-key"]
    assert alice["x-edge-segments"], alice


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], Path]:
    """(the fresh venv, a clean environment, a directory outside the checkout)."""
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "results", "build", "*.egg-info")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=ignore)
        else:
            shutil.copy2(REPO / name, src / name)
    # Outside the checkout, no PYTHONPATH, no settings from the caller's environment, a HOME of
    # its own (`edgeside serve` with no --data keeps the demo under ~/.local/share/edgeside).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "EDGESIDE_", "XDG_"))}
    env.pop("VIRTUAL_ENV", None)
    env["HOME"] = str(tmp / "home")
    outside = tmp / "elsewhere"
    outside.mkdir()

    venv = tmp / "venv"
    venv_py = [sys.executable, "-m", "venv", "--without-pip", str(venv)]
    making_venv = _started(venv_py, outside, env)
    dist = tmp / "dist"
    hook = "import sys; from setuptools import build_meta as b; print(b.build_wheel(sys.argv[1]))"
    _run([sys.executable, "-c", hook, str(dist)], src, env, 300)
    _finished([making_venv], 120)
    (wheel,) = dist.glob("edgeside-*.whl")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--python"]
    install = [*pip, str(venv / "bin" / "python"), "install", "-q", "--no-compile", "--no-deps"]
    _run([*install, str(wheel)], outside, env, 300)
    site = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    locked = sysconfig.get_paths()["purelib"]  # this venv's: installed from requirements.lock
    (site / "_edgeside_locked_dependencies.pth").write_text(locked + "\n")
    return venv, env, outside


def test_the_installed_wheel_is_itself_with_its_requirements_met(
    installed: tuple[Path, dict[str, str], Path],
) -> None:
    venv, env, outside = installed
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    edgeside = str(venv / "bin" / "edgeside")
    assert _run([edgeside, "--version"], outside, env, 60).strip() == f"edgeside {version}"
    found = json.loads(_run([str(venv / "bin" / "python"), "-c", CHECK_INSTALL], outside, env, 60))
    assert Path(found["server"]).is_relative_to(venv), found
    assert Path(found["dist"]).is_relative_to(venv), found
    assert found["editable"] == [], "nothing of the checkout's editable install is loaded"
    assert found["requires"] > 5 and found["unmet"] == [], found


def test_wheel_serves_the_demo_and_pushed_snapshots(
    installed: tuple[Path, dict[str, str], Path], tmp_path: Path
) -> None:
    venv, env, outside = installed
    edgeside = str(venv / "bin" / "edgeside")
    signed = {**env, "EDGESIDE_SIGNING_KEY": SIGNING_KEY}
    serving = {**signed, "EDGESIDE_ADMIN_TOKEN": TOKEN, "EDGESIDE_LOG_LEVEL": "warning"}
    # The demo's exports as the wheel installed them (package data), not the checkout's.
    where = "from server.offline import demo; print(demo.DEMO_DIR)"
    demo = Path(_run([str(venv / "bin" / "python"), "-c", where], outside, env, 60).strip())
    assert demo.is_relative_to(venv), demo
    built = tmp_path / "built"
    with ExitStack() as stack:
        # 1. `edgeside serve` with no --data: the demo, built from the wheel's data on first use.
        demo_port = free_port()
        demo_url = f"http://127.0.0.1:{demo_port}"
        demo_log = tmp_path / "serve-demo.log"
        demo_argv = [edgeside, "serve", "--host", "127.0.0.1", "--port", str(demo_port)]
        demo_proc = stack.enter_context(_serving(demo_argv, outside, serving, demo_log))
        # 2. An empty data directory, and snapshots built and pushed with the installed commands.
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        data = tmp_path / "data"
        data.mkdir()
        log = tmp_path / "serve.log"
        argv = [edgeside, "serve", "--host", "127.0.0.1", "--port", str(port), "--data", str(data)]
        proc = stack.enter_context(_serving(argv, outside, serving, log))
        builds = [
            _started(
                [
                    edgeside, "snapshot", "build", "--kind", kind,
                    "--input", *[str(p) for p in sorted((demo / kind).glob("*.ndjson"))],
                    "--config", str(demo / f"{kind}.yaml"), "--out", str(built / kind),
                ],
                outside,
                signed,
            )
            for kind in ("profiles", "content")
        ]  # fmt: skip
        rules_build = [edgeside, "rules", "build", str(demo / "rules.yaml")]
        builds.append(_started([*rules_build, "--out", str(built / "rules")], outside, signed))
        _finished(builds, 180)

        wait_http(url + "/healthz", proc=proc, log=log, timeout=90)
        assert httpx.get(url + "/readyz", timeout=5).status_code == 503  # nothing to serve yet
        push = [edgeside, "snapshot", "push"]
        _finished(
            [
                _started([*push, str(built / kind), "--to", url, "--token", TOKEN], outside, env)
                for kind in ("profiles", "content", "rules")
            ],
            180,
        )
        wait_http(url + "/readyz", proc=proc, log=log, timeout=60)
        ready = httpx.get(url + "/readyz", timeout=5).json()
        assert ready["ready"] is True and ready["signed"] is True, ready
        _personalised(url)

        wait_http(demo_url + "/readyz", proc=demo_proc, log=demo_log, timeout=120)
        ready = httpx.get(demo_url + "/readyz", timeout=5).json()
        assert ready["ready"] is True and ready["signed"] is True, ready
        _personalised(demo_url)
    # Kept in the user's data directory, not inside the installed package.
    home_demo = Path(env["HOME"]) / ".local" / "share" / "edgeside" / "demo"
    assert (home_demo / ".demo-digest").is_file(), sorted(Path(env["HOME"]).rglob("*"))[:20]
    assert list(venv.rglob(".demo-digest")) == []
