"""`edgeside snapshot …` subcommands."""

import argparse


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the `snapshot` command group."""
    subparsers.add_parser("snapshot", help="build, inspect and verify snapshots")
