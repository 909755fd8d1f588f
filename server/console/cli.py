"""`edgeside rules impact` and `edgeside rules shadow …`: the console's work from a terminal.

`impact` replays the log locally (the same `impact.replay` as the console's page); `shadow`
talks to a running server's console API with the admin token from `EDGESIDE_ADMIN_TOKEN`.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import msgspec

import rules
import snapshots
from snapshots import store

from ..config import ADMIN_TOKEN_ENV
from . import impact

DATA_HELP = "data directory of the node whose active snapshots are compared (EDGESIDE_DATA; "
DATA_HELP += "default: the demo data `edgeside serve` uses)"


def register(
    rules_commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    im = rules_commands.add_parser(
        "impact",
        help="replay logged decisions against a candidate rules file: what would change",
        description="Replay the last N logged decisions' inputs with the active rules and with "
        "CANDIDATE, and report how many decisions change, per placement (from → to variant), "
        "per segment, per site, and the cache cardinality before and after.",
    )
    im.add_argument("candidate", type=Path, help="the candidate rules file (.yaml or .json)")
    im.add_argument("--log", type=Path, help="decision-log directory or file (default DATA/logs)")
    im.add_argument("--data", help=DATA_HELP)
    im.add_argument(
        "--last",
        type=int,
        default=impact.DEFAULT_LAST,
        help=f"replay at most this many of the latest decisions (default {impact.DEFAULT_LAST}, "
        f"at most {impact.MAX_LAST})",
    )
    im.add_argument("--json", action="store_true", help="machine-readable output")
    im.set_defaults(func=cmd_impact)

    sh = rules_commands.add_parser(
        "shadow",
        help="run a candidate beside the live rules on a running server, then promote or discard",
        description="Talks to the console API of a running server with the admin token from "
        f"{ADMIN_TOKEN_ENV}.",
    )
    sh.add_argument("action", choices=["start", "status", "promote", "discard"], help="what to do")
    sh.add_argument("candidate", type=Path, nargs="?", help="the candidate rules file (start)")
    sh.add_argument(
        "--server", default="http://127.0.0.1:8080", help="server URL (default %(default)s)"
    )
    sh.add_argument(
        "--share",
        type=float,
        default=0.1,
        help="share of real decisions the candidate also makes, 0-1 (default %(default)s)",
    )
    sh.set_defaults(func=cmd_shadow)


def fail(message: str, code: int = 2) -> int:
    print(f"edgeside: error: {message}", file=sys.stderr)
    return code


def _data_dir(given: str | None) -> Path:
    if given:
        return Path(given)
    env = os.environ.get("EDGESIDE_DATA")
    if env:
        return Path(env)
    from ..offline.demo import DEFAULT_DEMO_DATA

    return DEFAULT_DEMO_DATA


def _engine_of(text: str, name: str) -> rules.Engine | None:
    ruleset, diags = rules.load(text, filename=name)
    if ruleset is None:
        for d in diags:
            if d.severity == "error":
                print(rules.render(d) + "\n", file=sys.stderr)
        return None
    return rules.compile_ruleset(ruleset)


def cmd_impact(args: argparse.Namespace) -> int:
    if not 1 <= args.last <= impact.MAX_LAST:
        return fail(f"--last {args.last}: between 1 and {impact.MAX_LAST}")
    try:
        text = args.candidate.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return fail(f"{args.candidate}: cannot read: {exc}")
    candidate = _engine_of(text, str(args.candidate))
    if candidate is None:
        return fail(f"{args.candidate} does not check; nothing was replayed", 1)
    data = _data_dir(args.data)
    logs: Path = args.log or data / "logs"
    if not logs.exists():
        return fail(f"{logs}: no such decision log")
    key = os.environ.get("EDGESIDE_SIGNING_KEY", "").encode() or None
    rules_path = store.active_path(data, "rules")
    if rules_path is None:
        return fail(f"{data}: no active rules snapshot to compare with")
    opened: list[Any] = []
    try:
        _, files = snapshots.read_blob_snapshot(rules_path, signing_key=key)
        name, blob = sorted(files.items())[0]
        active = _engine_of(blob.decode("utf-8"), name)
        if active is None:
            return fail(f"the active rules in {data} do not check")
        profiles = content = None
        path = store.active_path(data, "profiles")
        if path is not None:
            profiles = snapshots.open_profiles(path, signing_key=key, verify=False)
            opened.append(profiles)
        path = store.active_path(data, "content")
        if path is not None:
            content = snapshots.open_content(path, signing_key=key, verify=False)
            opened.append(content)
        window = impact.last_decisions(logs, args.last)
        report = impact.replay(window, active, candidate, profiles, content, args.last)
    except snapshots.SnapshotError as exc:
        return fail(str(exc))
    finally:
        for reader in opened:
            reader.close()
    if args.json:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        sys.stdout.write(impact.render_text(report))
    return 0


def _call(server: str, method: str, path: str, body: object | None = None) -> Any:
    token = os.environ.get(ADMIN_TOKEN_ENV, "")
    if not token:
        raise RuntimeError(f"set {ADMIN_TOKEN_ENV} to the server's admin token")
    if not server.startswith(("http://", "https://")):
        raise RuntimeError(f"--server {server!r}: an http(s) URL")
    data = msgspec.json.encode(body) if body is not None else None
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        server.rstrip("/") + "/console/api" + path,
        data=data,
        method=method,
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return msgspec.json.decode(response.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = msgspec.json.decode(exc.read())
            message = detail.get("error", {}).get("message") or detail
        except msgspec.DecodeError:
            message = exc.reason
        raise RuntimeError(f"{server}: {exc.code}: {message}") from None
    except OSError as exc:
        raise RuntimeError(f"{server}: {exc}") from None


def cmd_shadow(args: argparse.Namespace) -> int:
    try:
        if args.action == "start":
            if args.candidate is None:
                return fail("shadow start needs the candidate rules file")
            if not 0 < args.share <= 1:
                return fail(f"--share {args.share}: more than 0, at most 1")
            text = args.candidate.read_text(encoding="utf-8")
            result = _call(args.server, "POST", "/shadow", {"candidate": text, "share": args.share})
        elif args.action == "status":
            result = _call(args.server, "GET", "/shadow")
        else:
            result = _call(args.server, "POST", f"/shadow/{args.action}", {})
    except (RuntimeError, OSError, UnicodeDecodeError) as exc:
        return fail(str(exc), 1)
    if isinstance(result, dict):
        result.pop("text", None)
    sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
    return 0
