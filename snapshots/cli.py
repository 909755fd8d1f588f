"""`edgeside snapshot …` subcommands: build, inspect, verify, pack."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import msgspec

from snapshots.archive import pack
from snapshots.config import ContentConfig, ProfilesConfig, load_config
from snapshots.content_build import build_content
from snapshots.errors import SnapshotError
from snapshots.manifest import encode_manifest, read_manifest
from snapshots.profiles_build import build_profiles
from snapshots.reader import open_content, open_profiles
from snapshots.verify import verify_snapshot

DEFAULT_KEY_ENV = "EDGESIDE_SIGNING_KEY"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `snapshot` command group."""
    group = subparsers.add_parser("snapshot", help="build, inspect, verify and pack snapshots")
    group.set_defaults(func=lambda _args: _usage(group))
    sub = group.add_subparsers(dest="snapshot_command")

    b = sub.add_parser("build", help="build a snapshot from NDJSON exports")
    b.add_argument("--kind", choices=("profiles", "content"), required=True)
    b.add_argument("--input", nargs="+", type=Path, required=True, metavar="FILE")
    b.add_argument("--config", type=Path, required=True)
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--skip-invalid", action="store_true", help="build from the valid records")
    b.add_argument("--force", action="store_true", help="replace an existing --out directory")
    b.add_argument(
        "--signing-key-env",
        default=DEFAULT_KEY_ENV,
        metavar="VAR",
        help=f"environment variable holding the HMAC key (default {DEFAULT_KEY_ENV})",
    )
    b.set_defaults(func=_build)

    i = sub.add_parser("inspect", help="show manifest, counts and a sample record")
    i.add_argument("dir", type=Path)
    i.set_defaults(func=_inspect)

    v = sub.add_parser("verify", help="check checksums and signature; non-zero exit on mismatch")
    v.add_argument("dir", type=Path)
    v.add_argument("--signing-key-env", default=DEFAULT_KEY_ENV, metavar="VAR")
    v.set_defaults(func=_verify)

    p = sub.add_parser("pack", help="pack a snapshot directory into a .tar for transport")
    p.add_argument("dir", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_pack)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _key(var: str) -> bytes | None:
    value = os.environ.get(var)
    return value.encode() if value else None


class _Progress:
    """Progress on stderr, at most once a second, so long builds show life without noise."""

    def __init__(self) -> None:
        self._t0 = self._last = time.monotonic()

    def __call__(self, stage: str, n: int) -> None:
        now = time.monotonic()
        if now - self._last >= 1.0:
            self._last = now
            rate = n / (now - self._t0)
            print(f"  {stage}: {n:,} records ({rate:,.0f}/s)", file=sys.stderr, flush=True)


def _build(args: argparse.Namespace) -> int:
    key = _key(args.signing_key_env)
    try:
        if args.kind == "profiles":
            summary = build_profiles(
                args.input,
                load_config(args.config, ProfilesConfig),
                args.out,
                skip_invalid=args.skip_invalid,
                signing_key=key,
                progress=_Progress(),
                force=args.force,
            )
        else:
            summary = build_content(
                args.input,
                load_config(args.config, ContentConfig),
                args.out,
                skip_invalid=args.skip_invalid,
                signing_key=key,
                progress=_Progress(),
                force=args.force,
            )
    except SnapshotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        print(f"error: {exc.filename}: no such file", file=sys.stderr)
        return 1
    print("\n".join(summary.lines()))
    if key is None:
        print(f"  unsigned: set {args.signing_key_env} to sign snapshots")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    try:
        manifest = read_manifest(args.dir)
        print(encode_manifest(manifest).decode(), end="")
        sample: list[object] = []
        if manifest.kind == "profiles":
            with open_profiles(args.dir, verify=False) as r:
                sample = list(r.sample(1))
        elif manifest.kind == "content":
            with open_content(args.dir, verify=False) as c:
                sample = [c.get(i) for i in c.all_ids()[:1]]
    except SnapshotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for s in sample:
        print("sample:", msgspec.json.format(msgspec.json.encode(s), indent=2).decode())
    return 0


def _verify(args: argparse.Namespace) -> int:
    key = _key(args.signing_key_env)
    problems = verify_snapshot(args.dir, signing_key=key)
    if problems:
        for p in problems:
            print(f"FAIL {p}", file=sys.stderr)
        return 1
    manifest = read_manifest(args.dir)
    signed = "signature ok" if key else "signature not checked (no key)"
    if manifest.signature is None:
        signed = "unsigned"
    print(
        f"ok {args.dir}: {manifest.kind} {manifest.version}, "
        f"{len(manifest.files)} file(s), {signed}"
    )
    return 0


def _pack(args: argparse.Namespace) -> int:
    try:
        out = pack(args.dir, args.out)
    except SnapshotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"packed {args.dir} -> {out} ({out.stat().st_size:,} bytes)")
    return 0
