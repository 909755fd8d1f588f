"""`edgeside snapshot build|inspect|verify|pack`, driven through the real command entry point."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from server.cli import main
from tests.snapshots.kit import WriteNdjson, rec

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "server" / "offline" / "demo_data"


def build_demo(kind: str, out: Path, *extra: str) -> int:
    inputs = sorted(str(p) for p in (DEMO / kind).glob("*.ndjson"))
    return main(
        [
            "snapshot",
            "build",
            "--kind",
            kind,
            "--input",
            *inputs,
            "--config",
            str(DEMO / f"{kind}.yaml"),
            "--out",
            str(out),
            *extra,
        ]
    )


def test_build_inspect_verify_pack(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEMO_KEY", "k3y")
    assert build_demo("profiles", tmp_path / "p", "--signing-key-env", "DEMO_KEY") == 0
    out = capsys.readouterr().out
    assert "built profiles snapshot" in out and "blocked: " in out and "merges" in out
    assert main(["snapshot", "inspect", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert '"kind": "profiles"' in out and "sample:" in out and '"hmac-sha256"' in out
    assert main(["snapshot", "verify", str(tmp_path / "p"), "--signing-key-env", "DEMO_KEY"]) == 0
    assert "signature ok" in capsys.readouterr().out
    monkeypatch.setenv("DEMO_KEY", "wrong")
    assert main(["snapshot", "verify", str(tmp_path / "p"), "--signing-key-env", "DEMO_KEY"]) == 1
    assert "FAIL" in capsys.readouterr().err
    assert main(["snapshot", "pack", str(tmp_path / "p"), "--out", str(tmp_path / "p.tar")]) == 0
    with tarfile.open(tmp_path / "p.tar") as t:
        assert sorted(t.getnames()) == ["data.mdb", "manifest.json"]


def test_verify_fails_on_a_corrupt_snapshot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert build_demo("content", tmp_path / "c") == 0
    data = tmp_path / "c" / "data.mdb"
    raw = bytearray(data.read_bytes())
    raw[-10] ^= 0x01
    data.write_bytes(bytes(raw))
    capsys.readouterr()
    assert main(["snapshot", "verify", str(tmp_path / "c")]) == 1
    assert "data.mdb: sha256" in capsys.readouterr().err


def test_bad_input_fails_without_output_unless_skip_invalid(
    tmp_path: Path, write_ndjson: WriteNdjson, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_ndjson("in.ndjson", [rec("crm", {"cookie": "ok"}), b"{oops"])
    args = [
        "snapshot",
        "build",
        "--kind",
        "profiles",
        "--input",
        str(src),
        "--config",
        str(DEMO / "profiles.yaml"),
        "--out",
        str(tmp_path / "out"),
    ]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"{src}:2: malformed JSON" in err and "--skip-invalid" in err
    assert not (tmp_path / "out").exists()
    assert main([*args, "--skip-invalid"]) == 0
    assert f"skipped {src}:2: malformed JSON" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"]["profiles"] == 1


def test_missing_config_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "snapshot",
        "build",
        "--kind",
        "content",
        "--input",
        str(DEMO / "content" / "cms.ndjson"),
        "--config",
        str(tmp_path / "nope.yaml"),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(args) == 1
    assert "nope.yaml: no such config file" in capsys.readouterr().err
