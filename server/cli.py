"""The `edgeside` command: each part registers its subcommands; this module composes them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import rules.cli
import snapshots.cli

from . import serve
from .console import cli as console_cli
from .fleet import cli as fleet_cli
from .offline import demo, rules_snapshot
from .offline.report import cli as report_cli
from .version import installed_version

# What `edgeside --help` opens with: for the people who run it, not for this module's readers.
DESCRIPTION = """\
edgeside decides, in microseconds, which variant and content each visitor sees — beside your CDN
or proxy, from profile, content and rules snapshots. Write and check rules, build and push
snapshots, serve decisions and the marketers' console, replay and report on the decision log."""

EPILOG = """\
environment:
  EDGESIDE_ADMIN_TOKEN   admin routes, explain and /console (serve makes one for the run if unset)
  EDGESIDE_SIGNING_KEY   sign built snapshots; a server with it refuses unsigned ones
  EDGESIDE_DATA          the data directory (snapshots, logs/, live/, console/)
  EDGESIDE_<OPTION>      any `serve` option, e.g. EDGESIDE_PORT, EDGESIDE_WORKERS

Quick start: `edgeside serve`, then open the console URL it prints."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeside",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {installed_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    snapshots.cli.register(subparsers)
    rules_commands = rules.cli.register(subparsers)
    rules_snapshot.register_build(rules_commands)
    console_cli.register(rules_commands)  # rules impact, rules shadow (issue 19)
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
