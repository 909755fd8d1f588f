"""The `edgeside` command composes every part's subcommands."""

from server.cli import build_parser


def test_every_part_registers_its_command_group() -> None:
    parser = build_parser()
    for group in ("snapshot", "rules"):
        args = parser.parse_args([group])
        assert args.command == group
