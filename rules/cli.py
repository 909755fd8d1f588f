"""`edgeside rules …` subcommands."""

import argparse


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the `rules` command group."""
    subparsers.add_parser("rules", help="check and build rules files")
