"""`edgeside snapshot push|status|rollback|activate|delta` against two real nodes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.procs import edgeside, free_port
from server.cli import main
from snapshots.store import active_path, active_version
from tests.server.lifecycle.kit import TOKEN, profiles_snapshot, rules_snapshot


def test_push_to_many_nodes_status_and_rollback(
    demo_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    shutil.copytree(demo_copy, other, symlinks=True)
    env = {"EDGESIDE_ADMIN_TOKEN": TOKEN}
    snap = rules_snapshot(tmp_path, key=None)
    with (
        edgeside(demo_copy, env=env, log_dir=tmp_path) as a,
        edgeside(other, env=env, log_dir=tmp_path) as b,
    ):
        before = active_version(demo_copy, "rules")
        assert (
            main(["snapshot", "push", str(snap), "--to", a.url, "--to", b.url, "--token", TOKEN])
            == 0
        )
        out = capsys.readouterr().out
        assert out.count("ok    ") == 2 and "2/2 node(s) ok" in out
        version = active_version(demo_copy, "rules")
        assert version != before and active_version(other, "rules") == version

        # One node refuses (wrong token) and one is unreachable: a line each, non-zero exit.
        dead = f"http://127.0.0.1:{free_port()}"
        code = main(["snapshot", "push", str(snap), "--to", a.url, "--to", dead, "--token", "nope"])
        out = capsys.readouterr().out
        assert code == 1
        assert f"FAIL  {a.url}: 401 unauthorized" in out
        assert f"FAIL  {dead}: unreachable" in out

        assert main(["snapshot", "status", "--to", a.url, "--token", TOKEN]) == 0
        out = capsys.readouterr().out
        assert f"rules: active {version}" in out and "kept" in out

        assert (
            main(["snapshot", "rollback", "--kind", "rules", "--to", a.url, "--token", TOKEN]) == 0
        )
        assert "rolled back to" in capsys.readouterr().out
        assert active_version(demo_copy, "rules") == before
        assert (
            main(
                [
                    "snapshot",
                    "activate",
                    "--kind",
                    "rules",
                    version,
                    "--to",
                    a.url,
                    "--token",
                    TOKEN,
                ]
            )
            == 0
        )
        assert active_version(demo_copy, "rules") == version


def test_delta_command(demo_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = active_path(demo_copy, "profiles")
    assert base is not None
    target = profiles_snapshot(
        tmp_path,
        key=None,
        extra=[b'{"source":"crm","ids":{"cookie":"c-new"},"updated_at":"2026-11-21T10:00:00Z"}'],
    )
    out = tmp_path / "delta"
    assert (
        main(["snapshot", "delta", "--base", str(base), "--target", str(target), "--out", str(out)])
        == 0
    )
    line = capsys.readouterr().out
    assert f"base {base.name}" in line and "1 upsert(s), 0 deletion(s), 1 alias upsert(s)" in line
    assert main(["snapshot", "delta", "--base", str(base), "--out", str(tmp_path / "d2")]) == 2
