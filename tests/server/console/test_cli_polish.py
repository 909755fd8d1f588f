"""The command line as a user meets it: a version, help on every option, one error style, and
`--force` before an existing output is replaced."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from server.cli import build_parser, main
from server.offline.demo import DEMO_DIR


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("edgeside ")


def test_every_option_has_help_and_the_top_names_the_environment() -> None:
    parser = build_parser()
    missing: list[str] = []

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif not action.help and action.dest != "help":
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(parser, "edgeside")
    assert missing == []
    top = parser.format_help()
    assert "EDGESIDE_ADMIN_TOKEN" in top and "EDGESIDE_SIGNING_KEY" in top


def test_errors_share_one_style_and_exit_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope"
    cases = [
        ["report", "--logs", str(missing)],
        ["rules", "check", str(missing)],
        ["rules", "impact", str(DEMO_DIR / "rules.yaml"), "--data", str(tmp_path)],
        ["rules", "impact", str(missing)],
    ]
    for argv in cases:
        assert main(argv) != 0, argv
        err = capsys.readouterr().err
        assert err.startswith("edgeside: error: "), (argv, err)


def test_outputs_are_replaced_only_with_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules_file = DEMO_DIR / "rules.yaml"
    out = tmp_path / "built"
    assert main(["rules", "build", str(rules_file), "--out", str(out)]) == 0
    assert main(["rules", "build", str(rules_file), "--out", str(out)]) == 2
    assert "--force replaces it" in capsys.readouterr().err
    assert main(["rules", "build", str(rules_file), "--out", str(out), "--force"]) == 0
    logs = tmp_path / "logs.ndjson"
    logs.write_text("")
    page = tmp_path / "report.html"
    page.write_text("mine")
    assert main(["report", "--logs", str(logs), "--out", str(page)]) == 2
    assert page.read_text() == "mine"
    assert main(["report", "--logs", str(logs), "--out", str(page), "--force"]) == 0
    assert page.read_text() != "mine"
    tar = tmp_path / "rules.tar"
    tar.write_text("mine")
    assert main(["snapshot", "pack", str(out), "--out", str(tar)]) == 2
    assert main(["snapshot", "pack", str(out), "--out", str(tar), "--force"]) == 0
