"""`edgeside rules …` subcommands. (`rules build` needs the snapshot writer: `server/cli.py`.)"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import msgspec

from rules import analyze_text
from rules.analysis import describe, describe_page
from rules.diagnostics import Diagnostic, render


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """Add the `rules` command group; return its subcommands so the server can add `build`."""
    group = subparsers.add_parser(
        "rules", help="check, build, replay (impact) and shadow rules files"
    )
    sub = group.add_subparsers(dest="rules_command")
    check = sub.add_parser(
        "check",
        help="type-check a rules file; report errors, warnings and the decision-key cardinality",
    )
    check.add_argument("file", type=Path, help="rules file (.yaml, .yml or .json)")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.add_argument(
        "--sites",
        action="store_true",
        help="list the sites the rules know (any other site is decided with `default`'s rules)",
    )
    check.set_defaults(func=cmd_check)
    return sub


class _CheckOutput(msgspec.Struct):
    ok: bool
    errors: int
    warnings: int
    diagnostics: list[Diagnostic]
    max_keys: int | None
    cardinality: list[dict[str, object]]
    pages: list[dict[str, object]]
    sites: list[str]


def cmd_check(args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        text = path.read_bytes()
    except OSError as exc:
        print(f"edgeside: error: {path}: cannot read the file: {exc.strerror}", file=sys.stderr)
        return 2
    ruleset, diags, report = analyze_text(text, filename=str(path))
    errors = sum(1 for d in diags if d.severity == "error")
    warnings = len(diags) - errors
    if args.json:
        cards = [msgspec.to_builtins(c) for c in report.cardinality] if report else []
        pages = [msgspec.to_builtins(c) for c in report.pages] if report else []
        out = _CheckOutput(
            ruleset is not None,
            errors,
            warnings,
            diags,
            report.max_keys if report else None,
            cards,
            pages,
            sorted(ruleset.sites) if ruleset is not None else [],
        )
        sys.stdout.write(msgspec.json.encode(out).decode() + "\n")
        return 0 if ruleset is not None else 1
    for d in diags:
        print(render(d) + "\n")
    if ruleset is None or report is None:
        print(f"{path}: {errors} error(s), {warnings} warning(s)")
        return 1
    placements = len(ruleset.placement_names())
    print(
        f"{path}: ok — {len(ruleset.segments)} segments, {placements} placements, "
        f"{len(ruleset.experiments)} experiments, {len(ruleset.actions)} actions; "
        f"{warnings} warning(s)"
    )
    if args.sites:
        print("sites: " + ", ".join(sorted(ruleset.sites)))
    print("decision keys (cache cardinality):")
    for c in report.cardinality:
        print("  " + describe(c))
    print(f"at most {report.max_keys} decision keys for any one page")
    if report.pages:
        print("decision keys per page (pages:):")
        for pc in report.pages:
            print("  " + describe_page(pc))
    return 0
