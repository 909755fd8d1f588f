"""`edgeside rules build`: a checked rules file packed as a `rules` snapshot (SPEC §4).

It lives in `server` because it joins two parts: `rules` checks the file, `snapshots` writes it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
from pathlib import Path

import rules
import snapshots


def build_rules_snapshot(rules_file: Path, out: Path, signing_key: bytes | None = None) -> int:
    """Check a rules file and pack it as a `rules` snapshot; 0 on success, 1 if it has errors."""
    data = rules_file.read_bytes()
    ruleset, diagnostics = rules.load(data, filename=str(rules_file))
    for d in diagnostics:
        if d.severity == "error":
            print(rules.render(d), file=sys.stderr)
    if ruleset is None or rules.has_errors(diagnostics):
        return 1
    snapshots.write_blob_snapshot(
        out,
        kind="rules",
        files={rules_file.name: data},
        signing_key=signing_key,
        sources={rules_file.name: hashlib.sha256(data).hexdigest()},
    )
    return 0


def register_build(rules_commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    build = rules_commands.add_parser("build", help="check a rules file and pack it as a snapshot")
    build.add_argument("file", type=Path, help="rules file (.yaml, .yml or .json)")
    build.add_argument("--out", type=Path, required=True, help="snapshot directory to write")
    build.add_argument("--force", action="store_true", help="replace an existing --out directory")
    build.add_argument(
        "--signing-key-env",
        default="EDGESIDE_SIGNING_KEY",
        help="environment variable holding the HMAC key (default EDGESIDE_SIGNING_KEY)",
    )
    build.set_defaults(func=_cmd_build)


def _cmd_build(args: argparse.Namespace) -> int:
    key = os.environ.get(args.signing_key_env, "")
    out: Path = args.out
    if out.exists() and any(out.iterdir()) if out.is_dir() else out.exists():
        if not args.force:
            print(f"edgeside: error: {out} exists; --force replaces it", file=sys.stderr)
            return 2
        if out.is_dir():
            shutil.rmtree(out)
        else:
            out.unlink()
    try:
        code = build_rules_snapshot(args.file, out, key.encode() if key else None)
    except OSError as exc:
        print(f"edgeside: error: {args.file}: cannot read or write: {exc}", file=sys.stderr)
        return 2
    except snapshots.SnapshotError as exc:
        print(f"edgeside: error: {exc}", file=sys.stderr)
        return 1
    if code == 0:
        manifest = snapshots.read_manifest(args.out)
        print(f"built rules snapshot {manifest.version} -> {args.out}")
    return code
