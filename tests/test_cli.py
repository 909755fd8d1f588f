"""The `edgeside` command composes every part's subcommands."""

import importlib.metadata

import pytest

from server.cli import build_parser, main


def test_every_part_registers_its_command_group() -> None:
    parser = build_parser()
    for group in ("snapshot", "rules"):
        args = parser.parse_args([group])
        assert args.command == group


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"edgeside {importlib.metadata.version('edgeside')}\n"
