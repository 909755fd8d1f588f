"""`edgeside report`: content analytics from decision logs as a table, CSV or HTML."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .analytics import DIMENSIONS, build, read_records
from .render import to_csv, to_html, to_table


def parse_time(text: str) -> float:
    """Epoch seconds, or ISO-8601 (`2026-11-20`, `2026-11-20T10:00:00Z`); naive means UTC."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not an epoch or ISO-8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def parse_by(text: str) -> list[str]:
    dims = [d.strip() for d in text.split(",") if d.strip()]
    bad = [d for d in dims if d not in DIMENSIONS]
    if bad or not dims:
        raise argparse.ArgumentTypeError(
            f"unknown dimension {', '.join(bad) or '(none)'}; choose from {', '.join(DIMENSIONS)}"
        )
    return dims


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("report", help="impressions, clicks and conversions from logs")
    p.add_argument(
        "--logs",
        required=True,
        type=Path,
        help="decision-log directory or file (a server logs to DATA/logs by default)",
    )
    p.add_argument("--since", type=parse_time, help="from (epoch or ISO-8601, inclusive)")
    p.add_argument("--until", type=parse_time, help="to (epoch or ISO-8601, exclusive)")
    p.add_argument(
        "--by",
        type=parse_by,
        default=["placement", "variant"],
        help=f"comma-separated dimensions: {', '.join(DIMENSIONS)} (default placement,variant)",
    )
    p.add_argument(
        "--format",
        choices=["table", "csv", "html"],
        default="table",
        help="a terminal table, CSV, or one HTML page with charts (default table)",
    )
    p.add_argument("--out", type=Path, help="write here instead of standard output")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.logs.exists():
        print(f"edgeside: error: {args.logs}: no such file or directory", file=sys.stderr)
        return 2
    if args.out is not None and args.out.exists() and not args.force:
        print(f"edgeside: error: {args.out} exists; --force replaces it", file=sys.stderr)
        return 2
    report = build(read_records(args.logs), args.by, args.since, args.until)
    text = {"table": to_table, "csv": to_csv, "html": to_html}[args.format](report)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0
