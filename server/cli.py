"""The `edgeside` command: each part registers its subcommands; this module composes them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import rules.cli
import snapshots.cli

from . import serve
from .fleet import cli as fleet_cli
from .offline import demo, rules_snapshot
from .offline.report import cli as report_cli
from .version import installed_version


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeside", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {installed_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    snapshots.cli.register(subparsers)
    rules_snapshot.register_build(rules.cli.register(subparsers))
    serve.register(subparsers)
    demo.register(subparsers)
    report_cli.register(subparsers)
    fleet_cli.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    code: int = func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
