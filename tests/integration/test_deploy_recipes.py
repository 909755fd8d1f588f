"""deploy/container/Containerfile and deploy/systemd/edgeside.service, checked as far as this
machine honestly can: no container engine and no systemd as PID 1 run here (or in CI), so neither is
started. What is checked: `systemd-analyze verify` (syntax, every directive known and well-formed),
`systemd-analyze security --offline` (the exposure score the hardening buys), and that both recipes
agree with the code — the command they run parses, every EDGESIDE_* variable they name is one the
server reads, and the paths, port and user they set are consistent with each other. The install
they perform (wheel + lock) is run for real by test_packaging.py.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from bench.proxies import DEPLOY
from server.auth import SCOPES
from server.cli import build_parser
from server.config import FLEET_ENV, env_names, load_secrets, load_settings
from server.serve import run_serve
from tests.conftest import require_binary

from .helpers import REPO

pytestmark = pytest.mark.integration

CONTAINERFILE = DEPLOY / "container" / "Containerfile"
UNIT = DEPLOY / "systemd" / "edgeside.service"

# Every variable the server reads: one per setting (walked from the settings type), the fleet's
# short spellings, the pull list, the two secrets and the scoped token digests.
KNOWN_ENV = set(env_names()) | {f"EDGESIDE_FLEET_{name.upper()}" for name in FLEET_ENV}
KNOWN_ENV |= {"EDGESIDE_PULL", "EDGESIDE_ADMIN_TOKEN", "EDGESIDE_SIGNING_KEY"}
KNOWN_ENV |= {f"EDGESIDE_TOKENS_{scope.upper()}" for scope in SCOPES}
_ENV_NAME = re.compile(r"\bEDGESIDE_[A-Z0-9_]*[A-Z0-9]\b")


def _unit_entries(name: str) -> list[str]:
    return [
        line.split("=", 1)[1]
        for line in UNIT.read_text().splitlines()
        if line.startswith(f"{name}=")
    ]


def _instructions(keyword: str) -> list[str]:
    """The arguments of every Containerfile instruction `keyword`, continuation lines joined."""
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    return [
        line.split(None, 1)[1].strip()
        for line in text.splitlines()
        if line.split(None, 1)[:1] == [keyword]
    ]


def _runtime_env() -> dict[str, str]:
    """The ENV of the final stage (after the last FROM)."""
    (env_line,) = _instructions("ENV")
    pairs = dict(item.split("=", 1) for item in shlex.split(env_line))
    return {k: v.replace("$PATH", "") for k, v in pairs.items()}


# -- systemd -------------------------------------------------------------------------------------


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze")
    # verify checks that ExecStart's program exists and is executable; it is installed by the
    # operator (/opt/edgeside), so an image of the target layout stands in for it: a root holding
    # the unit, an executable at that path, and the host's own system units.
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "usr/lib/systemd").mkdir(parents=True)
    (root / "usr/lib/systemd/system").symlink_to("/lib/systemd/system")
    exe = root / _unit_entries("ExecStart")[0].split()[0].lstrip("/")
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    (root / "etc/systemd/system/edgeside.service").write_text(UNIT.read_text())
    result = subprocess.run(
        [analyze, "verify", f"--root={root}", "/etc/systemd/system/edgeside.service"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=tmp_path,
    )
    # verify exits 0 even for an unknown directive or a bad value: it only warns. No output at all
    # is the pass.
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def test_unit_hardening_scores_ok(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze")
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--json=short", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    # The "Overall exposure level" (0 best, 10 worst; systemd's own weighting of every item) is in
    # the text report only.
    text = subprocess.run(
        [analyze, "security", "--offline=true", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=tmp_path,
    ).stdout
    level = re.search(r"Overall exposure level for edgeside\.service: ([0-9.]+) (\w+)", text)
    assert level, text[-2000:]
    assert float(level.group(1)) <= 2.0 and level.group(2) == "OK", level.group(0)
    for must in ("User=/DynamicUser=", "NoNewPrivileges=", "ProtectSystem=", "ProtectHome="):
        assert checks[must]["set"], checks[must]


def test_unit_runs_edgeside_serve_as_a_user_on_its_state_directory() -> None:
    (exec_start,) = _unit_entries("ExecStart")
    program, *argv = shlex.split(exec_start)
    assert Path(program).name == "edgeside"
    assert build_parser().parse_args(argv).func is run_serve
    assert _unit_entries("User") == ["edgeside"]
    assert _unit_entries("EnvironmentFile") == ["/etc/edgeside/edgeside.env"]
    env = dict(e.split("=", 1) for e in _unit_entries("Environment"))
    settings = load_settings(environ={k: v for k, v in env.items() if k.startswith("EDGESIDE_")})
    # The data directory is the one systemd creates and lets the service write.
    (state,) = _unit_entries("StateDirectory")
    assert settings.data == f"/var/lib/{state}"
    assert _unit_entries("WorkingDirectory") == [settings.data]
    assert settings.host == "127.0.0.1"  # behind the proxy on the same host
    # Secrets are never in the unit itself (it is world-readable).
    assert load_secrets(env) == load_secrets({})


# -- container -----------------------------------------------------------------------------------


def test_containerfile_copies_what_exists_and_pins_pip_as_the_makefile() -> None:
    for args in _instructions("COPY"):
        if args.startswith("--from="):
            continue
        *sources, _dest = shlex.split(args)
        for source in sources:
            assert (REPO / source).exists(), source
    makefile_pip = re.search(r"^PIP_VERSION := (\S+)$", (REPO / "Makefile").read_text(), re.M)
    assert makefile_pip
    assert f"'pip=={makefile_pip.group(1)}'" in CONTAINERFILE.read_text()
    # Installed from the wheel with the lock as constraints, as test_packaging.py does.
    assert "-c requirements.lock" in CONTAINERFILE.read_text()


def test_containerfile_runs_serve_non_root_on_the_volume() -> None:
    (entrypoint,) = _instructions("ENTRYPOINT")
    (cmd,) = _instructions("CMD")
    command = json.loads(entrypoint) + json.loads(cmd)
    assert command[0] == "edgeside"
    assert build_parser().parse_args(command[1:]).func is run_serve
    (user,) = _instructions("USER")
    assert user.split(":")[0] not in {"0", "root"}
    env = _runtime_env()
    settings = load_settings(environ={k: v for k, v in env.items() if k.startswith("EDGESIDE_")})
    (volume,) = _instructions("VOLUME")
    assert json.loads(volume) == [settings.data]
    assert _instructions("WORKDIR")[-1] == settings.data
    assert _instructions("EXPOSE") == [str(settings.port)]
    assert settings.host == "0.0.0.0"  # reachable from outside the container's namespace
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"  # read-only root: no .pyc written at run time


@pytest.mark.parametrize("recipe", [CONTAINERFILE, UNIT], ids=["container", "systemd"])
def test_recipes_name_only_variables_the_server_reads(recipe: Path) -> None:
    named = set(_ENV_NAME.findall(recipe.read_text()))
    assert named, recipe
    assert named <= KNOWN_ENV, sorted(named - KNOWN_ENV)
    # And the secrets are documented in both.
    assert {"EDGESIDE_ADMIN_TOKEN", "EDGESIDE_SIGNING_KEY"} <= named
